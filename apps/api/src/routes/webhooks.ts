import { Router } from 'express';
import { assertEgressAllowed, FINAL_WEBHOOK_EVENTS, invalidRequest, isWebhookEvent, notFound, ServiceError, WEBHOOK_EVENTS, type WebhookEvent } from '@image-edits/core';
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
    const input = parseEndpointBody(req.body);
    const url = await assertEgressAllowed(input.url, { allowPrivate: deps.config.env.WEBHOOK_ALLOW_PRIVATE, param: 'url', codePrefix: 'webhook_url' });
    if ((await countWebhookEndpoints(deps.db, key)) >= MAX_WEBHOOK_ENDPOINTS) {
      throw invalidRequest(`an API key may have at most ${MAX_WEBHOOK_ENDPOINTS} webhook endpoints; delete one first`, null, 'webhook_endpoint_limit');
    }
    const endpoint = await createWebhookEndpoint(deps.db, { apiKeyId: key, url, events: input.events, description: input.description });
    // the secret is shown in full only here
    res.status(201).json({ ...endpointView(endpoint), secret: endpoint.secret });
  });

  router.get('/v1/webhook_endpoints', async (_req, res) => {
    const endpoints = await listWebhookEndpoints(deps.db, apiKeyId(res.locals));
    res.json({ object: 'list', data: endpoints.map(endpointView) });
  });

  router.get('/v1/webhook_endpoints/:id', async (req, res) => {
    const endpoint = await getWebhookEndpointForKey(deps.db, req.params.id, apiKeyId(res.locals));
    if (!endpoint) throw endpointNotFound(req.params.id);
    res.json(endpointView(endpoint));
  });

  router.delete('/v1/webhook_endpoints/:id', async (req, res) => {
    if (!(await deleteWebhookEndpoint(deps.db, req.params.id, apiKeyId(res.locals)))) throw endpointNotFound(req.params.id);
    res.json({ id: req.params.id, object: 'webhook_endpoint', deleted: true });
  });

  router.get('/v1/webhooks/secret', async (_req, res) => {
    res.json({ secret: await getOrCreateKeyWebhookSecret(deps.db, apiKeyId(res.locals)) });
  });

  router.post('/v1/webhooks/secret/rotate', async (_req, res) => {
    res.json({ secret: await rotateKeyWebhookSecret(deps.db, apiKeyId(res.locals)) });
  });

  router.get('/v1/jobs/:id/webhook_deliveries', async (req, res) => {
    const key = apiKeyId(res.locals);
    if (!(await getJobForKey(deps.db, req.params.id, key))) throw notFound(`No job with id '${req.params.id}'`, 'id', 'job_not_found');
    const deliveries = await listWebhookDeliveriesForJob(deps.db, req.params.id, key);
    res.json({ object: 'list', data: deliveries.map(deliveryView) });
  });

  router.post('/v1/jobs/:id/webhook_deliveries/:deliveryId/retry', async (req, res) => {
    const key = apiKeyId(res.locals);
    const { id: jobId, deliveryId } = req.params;
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

const ENDPOINT_FIELDS = new Set(['url', 'events', 'description']);

/** The JSON body of POST /v1/webhook_endpoints; each mistake is a 400 naming its field. */
function parseEndpointBody(body: unknown): { url: string; events: WebhookEvent[]; description?: string } {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw invalidRequest("the body must be a JSON object such as {\"url\": \"https://...\"} (Content-Type: application/json)", null, 'invalid_json');
  }
  const b = body as Record<string, unknown>;
  for (const k of Object.keys(b)) if (!ENDPOINT_FIELDS.has(k)) throw invalidRequest(`unknown parameter '${k}'; known: url, events, description`, k, 'unknown_parameter');
  if (b.url === undefined || b.url === null || b.url === '') throw invalidRequest('url is required', 'url', 'missing_required_parameter');
  if (typeof b.url !== 'string') throw invalidRequest('url must be a string', 'url', 'invalid_value');
  if (b.url.length > 2048) throw invalidRequest('url must be at most 2048 characters', 'url', 'invalid_value');
  let events: WebhookEvent[] = [];
  if (b.events !== undefined && b.events !== null) {
    if (!Array.isArray(b.events)) throw invalidRequest(`events must be a list of event types (${WEBHOOK_EVENTS.join(', ')})`, 'events', 'invalid_value');
    for (const e of b.events) {
      if (typeof e !== 'string' || !isWebhookEvent(e)) throw invalidRequest(`events: unknown event ${JSON.stringify(e)}; known: ${WEBHOOK_EVENTS.join(', ')}`, 'events', 'invalid_value');
    }
    events = [...new Set(b.events as WebhookEvent[])];
  }
  if (b.description !== undefined && b.description !== null && (typeof b.description !== 'string' || b.description.length > 256)) {
    throw invalidRequest('description must be a string of at most 256 characters', 'description', 'invalid_value');
  }
  return { url: b.url.trim(), events, ...(typeof b.description === 'string' ? { description: b.description } : {}) };
}
