import { randomUUID } from 'node:crypto';
import { Base64Text } from '@image-edits/core';
import type { Response } from 'express';

/**
 * `res.json(body)` for a body that may hold Base64Text (a synchronous answer's images): each goes
 * out as the bytes it already is, between the JSON around it. Through res.json a 2 MB image would
 * become a string, then be scanned by JSON.stringify and encoded again by express: the costliest
 * steps of the answer. A body without Base64Text is res.json's.
 */
export function sendJson(res: Response, body: unknown): void {
  const blobs: Buffer[] = [];
  // a random marker per answer: no text of the body (a revised prompt, metadata) can spell it
  const marker = `b64-${randomUUID()}:`;
  const text = JSON.stringify(withMarkers(body, marker, blobs));
  if (blobs.length === 0) {
    res.json(body);
    return;
  }
  // [json, index, json, index, ..., json]; base64 needs no escaping, so its bytes sit between two quotes
  const parts = text.split(new RegExp(`"${marker}(\\d+)"`));
  const pieces = parts.flatMap((p, i) => (i % 2 === 0 ? [Buffer.from(p)] : [QUOTE, blobs[Number(p)]!, QUOTE]));
  res.setHeader('content-type', 'application/json; charset=utf-8');
  res.setHeader('content-length', pieces.reduce((n, b) => n + b.length, 0));
  // corked: the pieces leave in one write (end uncorks)
  res.cork();
  for (const b of pieces) res.write(b);
  res.end();
}

const QUOTE = Buffer.from('"');

/** A copy of the body's objects and arrays with each Base64Text swapped for a marker (JSON.stringify would call its toJSON first). */
function withMarkers(value: unknown, marker: string, blobs: Buffer[]): unknown {
  if (value instanceof Base64Text) return `${marker}${blobs.push(value.bytes) - 1}`;
  if (Array.isArray(value)) return value.map((v) => withMarkers(v, marker, blobs));
  if (value && typeof value === 'object' && Object.getPrototypeOf(value) === Object.prototype) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withMarkers(v, marker, blobs)]));
  }
  return value;
}
