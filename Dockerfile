FROM node:20-bookworm-slim
WORKDIR /app
RUN apt-get update && apt-get install -y --no-install-recommends procps && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY apps/api/package.json apps/api/
COPY apps/worker/package.json apps/worker/
COPY packages/core/package.json packages/core/
COPY packages/db/package.json packages/db/
COPY packages/queue/package.json packages/queue/
COPY packages/storage/package.json packages/storage/
COPY packages/providers/package.json packages/providers/
COPY packages/testing/package.json packages/testing/
COPY prisma prisma
COPY scripts scripts
RUN npm install --no-audit --no-fund --ignore-scripts
COPY . .
RUN npm run db:generate
ENV NODE_ENV=production PORT=8080
EXPOSE 8080
CMD ["npm", "run", "start:api"]
