-- AlterTable
ALTER TABLE "usage" ADD COLUMN     "details" JSONB;
