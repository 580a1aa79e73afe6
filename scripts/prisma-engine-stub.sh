#!/bin/sh
# Stand-in for Prisma's schema engine: `prisma generate` looks for it but never runs it.
echo "prisma schema engine stub: migrations are applied by npm run db:migrate" >&2
exit 1
