-- AlterTable
ALTER TABLE "api_keys" ADD COLUMN "max_concurrent_jobs" INTEGER;
