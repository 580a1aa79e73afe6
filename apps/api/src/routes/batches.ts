import { Router } from 'express';
import { batchObject, conflict, invalidRequest, notFound } from '@image-edits/core';
import { getBatchForKey, listBatches, requestBatchCancel } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { idempotency, jsonDigest } from '../middleware/idempotency';
import { createBatch } from '../use-cases/create-batch';

const isBatchId = (id: string) => /^batch_[0-9a-z]+$/.test(id);
const batchNotFound = (id: string) => notFound(`No batch found with id '${id}'`, 'id', 'batch_not_found');

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
    const q = req.query;
    const limit = q.limit === undefined ? 20 : Number(q.limit);
    if (q.limit !== undefined && (typeof q.limit !== 'string' || !Number.isInteger(limit) || limit < 1 || limit > 100)) {
      throw invalidRequest('limit must be an integer from 1 to 100', 'limit', 'invalid_value');
    }
    const after = q.after === undefined ? undefined : String(q.after);
    if (after !== undefined && !isBatchId(after)) throw invalidRequest('after must be a batch id (the last_id of the previous page)', 'after', 'invalid_value');
    const page = await listBatches(deps.db, apiKeyId(res.locals), { limit, after });
    const data = page.batches.map(batchObject);
    res.json({ object: 'list', data, first_id: data[0]?.id ?? null, last_id: data.at(-1)?.id ?? null, has_more: page.hasMore });
  });

  router.get('/v1/batches/:id', async (req, res) => {
    const batch = isBatchId(req.params.id) ? await getBatchForKey(deps.db, req.params.id, apiKeyId(res.locals)) : null;
    if (!batch) throw batchNotFound(req.params.id);
    res.json(batchObject(batch));
  });

  /**
   * validating or in_progress → cancelling: nothing new starts, what runs finishes, the rest is
   * taken off the queues by the worker; the batch ends `cancelled` with the files of what finished.
   */
  router.post('/v1/batches/:id/cancel', async (req, res) => {
    const key = apiKeyId(res.locals);
    const id = req.params.id;
    const batch = isBatchId(id) ? await getBatchForKey(deps.db, id, key) : null;
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
