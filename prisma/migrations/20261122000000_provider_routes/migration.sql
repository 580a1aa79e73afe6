-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "target_index" INTEGER NOT NULL DEFAULT 0,
ADD COLUMN     "targets" JSONB NOT NULL DEFAULT '[]';

-- AlterTable
ALTER TABLE "usage" ADD COLUMN     "cost_usd" DECIMAL(12,6) NOT NULL DEFAULT 0,
ADD COLUMN     "quality" TEXT,
ADD COLUMN     "size" TEXT;
