# Node 22: what the SDKs ask for (openai 7, @google/genai, the AWS SDK); the service also runs on 20.10+
FROM node:22-bookworm-slim
WORKDIR /app
# tini: PID 1 forwards SIGTERM to node and reaps zombies; procps: the worker's healthcheck (pgrep)
RUN apt-get update && apt-get install -y --no-install-recommends procps tini && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY apps/api/package.json apps/api/
COPY apps/worker/package.json apps/worker/
COPY apps/console/package.json apps/console/
COPY packages/core/package.json packages/core/
COPY packages/db/package.json packages/db/
COPY packages/edits/package.json packages/edits/
COPY packages/queue/package.json packages/queue/
COPY packages/storage/package.json packages/storage/
COPY packages/providers/package.json packages/providers/
COPY packages/testing/package.json packages/testing/
COPY prisma prisma
COPY scripts scripts
# exactly the lockfile; no dependency's install script is needed (package.json allowScripts), and the
# project's own postinstall (prisma generate) runs below, once the sources are in
RUN npm ci --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run db:generate
# the browser console, served by the API at / (apps/console/dist)
RUN node apps/console/scripts/ensure-build.mjs --force
ENV NODE_ENV=production PORT=8080
EXPOSE 8080
# node itself gets the signals (no npm or tsx CLI in between): SIGTERM drains within SHUTDOWN_TIMEOUT_MS.
# `-s`: tini still reaps when it is not PID 1 (compose's `init: true` puts docker-init in front of it)
ENTRYPOINT ["tini", "-s", "--"]
CMD ["node", "--import", "tsx", "apps/api/src/main.ts"]
