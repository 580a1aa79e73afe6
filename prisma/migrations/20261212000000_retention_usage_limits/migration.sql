-- Retention, usage reports and per-key limits (issue 14).

-- AlterTable: per-key limits and retention (null = the deployment's default; 0 = no limit)
ALTER TABLE "api_keys" ADD COLUMN     "is_admin" BOOLEAN NOT NULL DEFAULT false,
ADD COLUMN     "requests_per_minute" INTEGER,
ADD COLUMN     "images_per_minute" INTEGER,
ADD COLUMN     "monthly_budget_usd" DECIMAL(12,2),
ADD COLUMN     "input_retention_seconds" INTEGER,
ADD COLUMN     "result_retention_seconds" INTEGER;

-- AlterTable: a job's retention, copied from its key at submission; when its objects and its data went
ALTER TABLE "jobs" ADD COLUMN     "input_retention_seconds" INTEGER NOT NULL DEFAULT 3600,
ADD COLUMN     "result_retention_seconds" INTEGER DEFAULT 604800,
ADD COLUMN     "inputs_deleted_at" TIMESTAMP(3),
ADD COLUMN     "outputs_deleted_at" TIMESTAMP(3),
ADD COLUMN     "deleted_at" TIMESTAMP(3);

-- Batch children follow their batch's output file, not a retention of their own
UPDATE "jobs" SET "result_retention_seconds" = NULL WHERE "batch_id" IS NOT NULL;

-- Generated: when a final job's inputs and result expire (null while it is not final). Written by
-- Postgres only; the sweeps' indexes need a column, not an expression Prisma cannot describe.
ALTER TABLE "jobs" ADD COLUMN "inputs_expire_at" TIMESTAMP(3) GENERATED ALWAYS AS ("completed_at" + make_interval(secs => "input_retention_seconds")) STORED,
ADD COLUMN "result_expires_at" TIMESTAMP(3) GENERATED ALWAYS AS ("completed_at" + make_interval(secs => "result_retention_seconds")) STORED;

-- CreateIndex
CREATE INDEX "jobs_inputs_deleted_at_inputs_expire_at_idx" ON "jobs"("inputs_deleted_at", "inputs_expire_at");
CREATE INDEX "jobs_outputs_deleted_at_result_expires_at_idx" ON "jobs"("outputs_deleted_at", "result_expires_at");
CREATE INDEX "jobs_completed_at_idx" ON "jobs"("completed_at");
CREATE INDEX "jobs_batch_id_outputs_deleted_at_idx" ON "jobs"("batch_id", "outputs_deleted_at");

-- AlterTable: usage outlives its job's row (purged after JOB_ROW_RETENTION_DAYS), so it says where it came from
ALTER TABLE "usage" ADD COLUMN     "source" TEXT NOT NULL DEFAULT 'image.edit';
UPDATE "usage" u SET "source" = 'batch' FROM "jobs" j WHERE j."id" = u."job_id" AND j."batch_id" IS NOT NULL;
ALTER TABLE "usage" ALTER COLUMN "job_id" DROP NOT NULL;

-- AlterForeignKey: purging a job's row keeps its usage
ALTER TABLE "usage" DROP CONSTRAINT "usage_job_id_fkey";
ALTER TABLE "usage" ADD CONSTRAINT "usage_job_id_fkey" FOREIGN KEY ("job_id") REFERENCES "jobs"("id") ON DELETE SET NULL ON UPDATE CASCADE;

-- CreateIndex: an admin's usage report reads every key's rows by time
CREATE INDEX "usage_created_at_idx" ON "usage"("created_at");
