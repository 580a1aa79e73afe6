import { Router } from 'express';
import { batchIdParams, batchObject, conflict, listBatchesQuery, notFound, parseInput } from '@image-edits/core';
import { getBatchForKey, listBatches, requestBatchCancel } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { idempotency, jsonDigest } from '../middleware/idempotency';
import { createBatch } from '../use-cases/create-batch';

const batchNotFound = (id: string) => notFound(`No batch found with id '${id}'`, 'id', 'batch_not_found');
/** The path's batch id; one that is no batch id names no batch (404). */
const batchId = (params: Record<string, string>) => parseInput(batchIdParams, params, { orElse: () => batchNotFound(String(params.id)) }).id;

/**
 * OpenAI's Batch API for `/v1/images/edits`: create (answers at once, `validating`; the worker does
 * the rest), read, list with a cursor, cancel. Batches belong to the API key: another key's id is 404.
 */
export function batchesRouter(deps: ApiDeps): Router {
  const router = Router();

  router.post('/v1/batches', idempotency(deps, { hash: jsonDigest }), async (req, res) => {
    const batch = await createBatch(deps, apiKeyId(res.locals), req.body);
    res.json(batchObject(batch));
  });

  router.get('/v1/batches', async (req, res) => {
    const q = parseInput(listBatchesQuery, req.query);
    const page = await listBatches(deps.db, apiKeyId(res.locals), { limit: q.limit ?? 20, after: q.after });
    const data = page.batches.map(batchObject);
    res.json({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore });
  });

  router.get('/v1/batches/:id', async (req, res) => {
    const id = batchId(req.params);
    const batch = await getBatchForKey(deps.db, id, apiKeyId(res.locals));
    if (!batch) throw batchNotFound(id);
    res.json(batchObject(batch));
  });

  /**
   * validating or in_progress → cancelling: nothing new starts, what runs finishes, the rest is
   * taken off the queues by the worker; the batch ends `cancelled` with the files of what finished.
   */
  router.post('/v1/batches/:id/cancel', async (req, res) => {
    const key = apiKeyId(res.locals);
    const id = batchId(req.params);
    const batch = await getBatchForKey(deps.db, id, key);
    if (!batch) throw batchNotFound(id);
    if (await requestBatchCancel(deps.db, id, key)) {
      // a validating batch is ended by its fan-out; a running one's queued children go now
      await deps.batchQueue.enqueue({ batchId: id, step: 'stop' }).catch((err: unknown) => deps.logger.warn({ err, batchId: id }, 'stop step not queued; the reconciler will queue it'));
    } else if (batch.status !== 'cancelling') {
      const now = (await getBatchForKey(deps.db, id, key)) ?? batch;
      if (now.status !== 'cancelling') throw conflict(`Batch ${id} is ${now.status} and can no longer be cancelled`, 'batch_not_cancellable');
    }
    res.json(batchObject((await getBatchForKey(deps.db, id, key)) ?? batch));
  });

  return router;
}
