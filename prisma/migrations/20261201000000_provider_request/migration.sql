-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "provider_request" JSONB;
