-- CreateEnum
CREATE TYPE "BatchStatus" AS ENUM ('validating', 'failed', 'in_progress', 'finalizing', 'completed', 'expired', 'cancelling', 'cancelled');

-- AlterTable
ALTER TABLE "jobs" ADD COLUMN     "batch_id" TEXT,
ADD COLUMN     "batch_line" INTEGER,
ADD COLUMN     "custom_id" TEXT;

-- AlterTable
ALTER TABLE "webhook_deliveries" ADD COLUMN     "batch_id" TEXT,
ALTER COLUMN "job_id" DROP NOT NULL;

-- CreateTable
CREATE TABLE "batches" (
    "id" TEXT NOT NULL,
    "api_key_id" TEXT NOT NULL,
    "status" "BatchStatus" NOT NULL DEFAULT 'validating',
    "endpoint" TEXT NOT NULL,
    "input_file_id" TEXT NOT NULL,
    "completion_window" TEXT NOT NULL,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "errors" JSONB,
    "output_file_id" TEXT,
    "error_file_id" TEXT,
    "total" INTEGER NOT NULL DEFAULT 0,
    "completed" INTEGER NOT NULL DEFAULT 0,
    "failed" INTEGER NOT NULL DEFAULT 0,
    "lines_done" INTEGER NOT NULL DEFAULT 0,
    "fanned_out_at" TIMESTAMP(3),
    "settled_at" TIMESTAMP(3),
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "in_progress_at" TIMESTAMP(3),
    "expires_at" TIMESTAMP(3) NOT NULL,
    "finalizing_at" TIMESTAMP(3),
    "completed_at" TIMESTAMP(3),
    "failed_at" TIMESTAMP(3),
    "expired_at" TIMESTAMP(3),
    "cancelling_at" TIMESTAMP(3),
    "cancelled_at" TIMESTAMP(3),
    "updated_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "batches_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "batch_request_errors" (
    "batch_id" TEXT NOT NULL,
    "line" INTEGER NOT NULL,
    "custom_id" TEXT NOT NULL,
    "error" JSONB NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "batch_request_errors_pkey" PRIMARY KEY ("batch_id","line")
);

-- CreateIndex
CREATE INDEX "batches_api_key_id_id_idx" ON "batches"("api_key_id", "id");

-- CreateIndex
CREATE INDEX "batches_status_expires_at_idx" ON "batches"("status", "expires_at");

-- CreateIndex
CREATE UNIQUE INDEX "jobs_batch_id_batch_line_key" ON "jobs"("batch_id", "batch_line");

-- CreateIndex
CREATE UNIQUE INDEX "webhook_deliveries_batch_id_event_type_destination_key" ON "webhook_deliveries"("batch_id", "event_type", "destination");

-- AddForeignKey
ALTER TABLE "jobs" ADD CONSTRAINT "jobs_batch_id_fkey" FOREIGN KEY ("batch_id") REFERENCES "batches"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "webhook_deliveries" ADD CONSTRAINT "webhook_deliveries_batch_id_fkey" FOREIGN KEY ("batch_id") REFERENCES "batches"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "batches" ADD CONSTRAINT "batches_api_key_id_fkey" FOREIGN KEY ("api_key_id") REFERENCES "api_keys"("id") ON DELETE RESTRICT ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "batch_request_errors" ADD CONSTRAINT "batch_request_errors_batch_id_fkey" FOREIGN KEY ("batch_id") REFERENCES "batches"("id") ON DELETE CASCADE ON UPDATE CASCADE;
