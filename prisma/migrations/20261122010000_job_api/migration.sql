-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "cancel_requested_at" TIMESTAMP(3),
ADD COLUMN     "deadline_at" TIMESTAMP(3),
ADD COLUMN     "webhook_events" TEXT[] DEFAULT ARRAY[]::TEXT[],
ADD COLUMN     "webhook_url" TEXT;

-- CreateIndex
CREATE INDEX "jobs_status_deadline_at_idx" ON "jobs"("status", "deadline_at");
