-- The sweeps' indexes hold only the rows their sweeps look for (final jobs, jobs with a deadline,
-- batch children). A job's INSERT, start and success each wrote an entry into all nine indexes of
-- `jobs` (every status change is a non-HOT update); now a direct job without a deadline writes three,
-- and its success six. Same names and columns as schema.prisma (Prisma cannot describe predicates);
-- every sweep's WHERE implies its index's predicate, so the planner still uses them.
DROP INDEX "jobs_inputs_deleted_at_inputs_expire_at_idx";
CREATE INDEX "jobs_inputs_deleted_at_inputs_expire_at_idx" ON "jobs"("inputs_deleted_at", "inputs_expire_at") WHERE "inputs_deleted_at" IS NULL AND "inputs_expire_at" IS NOT NULL;

DROP INDEX "jobs_outputs_deleted_at_result_expires_at_idx";
CREATE INDEX "jobs_outputs_deleted_at_result_expires_at_idx" ON "jobs"("outputs_deleted_at", "result_expires_at") WHERE "outputs_deleted_at" IS NULL AND "result_expires_at" IS NOT NULL;

DROP INDEX "jobs_completed_at_idx";
CREATE INDEX "jobs_completed_at_idx" ON "jobs"("completed_at") WHERE "completed_at" IS NOT NULL;

DROP INDEX "jobs_batch_id_outputs_deleted_at_idx";
CREATE INDEX "jobs_batch_id_outputs_deleted_at_idx" ON "jobs"("batch_id", "outputs_deleted_at") WHERE "batch_id" IS NOT NULL;

DROP INDEX "jobs_status_deadline_at_idx";
CREATE INDEX "jobs_status_deadline_at_idx" ON "jobs"("status", "deadline_at") WHERE "deadline_at" IS NOT NULL;

-- a direct job's NULL batch never collides: only batch children need the uniqueness (and the entry)
DROP INDEX "jobs_batch_id_batch_line_key";
CREATE UNIQUE INDEX "jobs_batch_id_batch_line_key" ON "jobs"("batch_id", "batch_line") WHERE "batch_id" IS NOT NULL;
