import { Router } from 'express';
import { notFound } from '@image-edits/core';
import { getJobForKey } from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { apiKeyId } from '../middleware/auth';
import { jobObject } from '../presenters';

export function jobsRouter(deps: ApiDeps): Router {
  const router = Router();
  router.get('/v1/jobs/:id', async (req, res) => {
    // another key's job is "not found", never "forbidden": ids do not leak across keys
    const job = await getJobForKey(deps.db, req.params.id, apiKeyId(res.locals));
    if (!job) throw notFound(`No job with id '${req.params.id}'`, 'id', 'job_not_found');
    res.json(await jobObject(job, deps.store, deps.config.env.SIGNED_URL_TTL_SECONDS));
  });
  return router;
}
