import { Router } from 'express';
import { assertEgressAllowed, FINAL_WEBHOOK_EVENTS, invalidRequest, jobIdParams, notFound, parseInput, ServiceError, webhookDeliveryParams, webhookEndpointBodySchema, webhookEndpointIdParams } from '@image-edits/core';
import {
  countWebhookEndpoints,
  createWebhookEndpoint,
  type DeliveryWithAttempts,
  deleteWebhookEndpoint,
  failWebhookDelivery,
  getJobForKey,
  getOrCreateKeyWebhookSecret,
  getWebhookDeliveryForKey,
  getWebhookEndpointForKey,
  listWebhookDeliveriesForJob,
  listWebhookEndpoints,
  reopenWebhookDelivery,
  rotateKeyWebhookSecret,
  type WebhookEndpointRecord,
} from '@image-edits/db';
import type { ApiDeps } from '../deps';
import { idempotency, jsonDigest } from '../middleware/idempotency';
import { apiKeyId } from '../middleware/auth';

/** Endpoints per key: every event fans out to each of them. */
export const MAX_WEBHOOK_ENDPOINTS = 20;

/**
 * Webhooks: the key's endpoints (each with its own secret and event filter), the key's default
 * secret (signs deliveries to a submission's webhook_url), and a job's deliveries with their
 * attempts, which can be sent again. Another key's objects are "not found".
 */
export function webhooksRouter(deps: ApiDeps): Router {
  const router = Router();

  // creating an endpoint is a creating POST: Idempotency-Key makes a retried create safe
  router.post('/v1/webhook_endpoints', idempotency(deps, { hash: jsonDigest }), async (req, res) => {
    const key = apiKeyId(res.locals);
    const input = parseInput(webhookEndpointBodySchema, req.body);
    const url = await assertEgressAllowed(input.url, { allowPrivate: deps.config.env.WEBHOOK_ALLOW_PRIVATE, param: 'url', codePrefix: 'webhook_url' });
    if ((await countWebhookEndpoints(deps.db, key)) >= MAX_WEBHOOK_ENDPOINTS) {
      throw invalidRequest(`an API key may have at most ${MAX_WEBHOOK_ENDPOINTS} webhook endpoints; delete one first`, null, 'webhook_endpoint_limit');
    }
    const endpoint = await createWebhookEndpoint(deps.db, { apiKeyId: key, url, events: input.events ?? [], description: input.description });
    // the secret is shown in full only here
    res.status(201).json({ ...endpointView(endpoint), secret: endpoint.secret });
  });

  router.get('/v1/webhook_endpoints', async (_req, res) => {
    const endpoints = await listWebhookEndpoints(deps.db, apiKeyId(res.locals));
    res.json({ object: 'list', data: endpoints.map(endpointView) });
  });

  router.get('/v1/webhook_endpoints/:id', async (req, res) => {
    const { id } = parseInput(webhookEndpointIdParams, req.params);
    const endpoint = await getWebhookEndpointForKey(deps.db, id, apiKeyId(res.locals));
    if (!endpoint) throw endpointNotFound(id);
    res.json(endpointView(endpoint));
  });

  router.delete('/v1/webhook_endpoints/:id', async (req, res) => {
    const { id } = parseInput(webhookEndpointIdParams, req.params);
    if (!(await deleteWebhookEndpoint(deps.db, id, apiKeyId(res.locals)))) throw endpointNotFound(id);
    res.json({ id, object: 'webhook_endpoint', deleted: true });
  });

  router.get('/v1/webhooks/secret', async (_req, res) => {
    res.json({ secret: await getOrCreateKeyWebhookSecret(deps.db, apiKeyId(res.locals)) });
  });

  router.post('/v1/webhooks/secret/rotate', async (_req, res) => {
    res.json({ secret: await rotateKeyWebhookSecret(deps.db, apiKeyId(res.locals)) });
  });

  router.get('/v1/jobs/:id/webhook_deliveries', async (req, res) => {
    const key = apiKeyId(res.locals);
    const { id } = parseInput(jobIdParams, req.params);
    if (!(await getJobForKey(deps.db, id, key))) throw notFound(`No job with id '${id}'`, 'id', 'job_not_found');
    const deliveries = await listWebhookDeliveriesForJob(deps.db, id, key);
    res.json({ object: 'list', data: deliveries.map(deliveryView) });
  });

  router.post('/v1/jobs/:id/webhook_deliveries/:delivery_id/retry', async (req, res) => {
    const key = apiKeyId(res.locals);
    const { id: jobId, delivery_id: deliveryId } = parseInput(webhookDeliveryParams, req.params);
    const delivery = await getWebhookDeliveryForKey(deps.db, deliveryId, jobId, key);
    if (!delivery) throw notFound(`No webhook delivery with id '${deliveryId}' for job '${jobId}'`, 'id', 'webhook_delivery_not_found');
    if (!(await reopenWebhookDelivery(deps.db, delivery.id))) {
      throw new ServiceError(409, 'invalid_request_error', `webhook delivery ${delivery.id} is still being retried on its schedule; retry it once it has succeeded or failed`, {
        code: 'webhook_delivery_pending',
      });
    }
    try {
      // one attempt now, under the same webhook-id
      await deps.webhookQueue.enqueueRetry({ deliveryId: delivery.id });
    } catch (err) {
      await failWebhookDelivery(deps.db, delivery.id, 'the manual retry could not be queued');
      throw err;
    }
    const reopened = await getWebhookDeliveryForKey(deps.db, deliveryId, jobId, key);
    res.status(202).json(deliveryView(reopened ?? delivery));
  });

  return router;
}

const endpointNotFound = (id: string) => notFound(`No webhook endpoint with id '${id}'`, 'id', 'webhook_endpoint_not_found');

const seconds = (d: Date | null) => (d ? Math.floor(d.getTime() / 1000) : null);

function endpointView(e: WebhookEndpointRecord): Record<string, unknown> {
  return {
    id: e.id,
    object: 'webhook_endpoint',
    url: e.url,
    // an empty filter means the final events (and any added later): shown as what it sends today
    events: e.events.length ? e.events : FINAL_WEBHOOK_EVENTS,
    description: e.description,
    status: e.disabledAt ? 'disabled' : 'enabled',
    disabled_at: seconds(e.disabledAt),
    created_at: seconds(e.createdAt),
  };
}

function deliveryView(d: DeliveryWithAttempts): Record<string, unknown> {
  return {
    id: d.id,
    object: 'webhook_delivery',
    /** the webhook-id header: the same on every attempt */
    webhook_id: d.messageId,
    event: d.eventType,
    job_id: d.jobId,
    endpoint_id: d.endpointId,
    url: d.url,
    status: d.status,
    attempts: d.attemptLog.map((a) => ({ attempt: a.attempt, status_code: a.statusCode, latency_ms: a.latencyMs, error: a.error, created_at: seconds(a.createdAt) })),
    last_status_code: d.lastStatusCode,
    last_error: d.lastError,
    next_attempt_at: d.status === 'pending' ? seconds(d.nextAttemptAt) : null,
    created_at: seconds(d.createdAt),
    updated_at: seconds(d.updatedAt),
  };
}
