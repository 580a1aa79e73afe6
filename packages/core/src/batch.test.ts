import { describe, expect, it } from '@jest/globals';
import { batchChildJobId, batchErrorList, batchObject, batchRequestId, batchResultFileId, parseBatchCreate, parseBatchLine } from './batch';

const line = (o: unknown) => JSON.stringify(o);
const good = (id: string) => ({ custom_id: id, method: 'POST', url: '/v1/images/edits', body: { prompt: 'p', images: [{ file_id: 'file-1' }] } });

describe('batch input lines', () => {
  it('accepts a well-formed line and skips blank ones', () => {
    const seen = new Set<string>();
    expect(parseBatchLine(line(good('a')), 1, seen)).toEqual({ ok: true, customId: 'a', body: good('a').body });
    expect(parseBatchLine('   ', 2, seen)).toBeNull();
  });
  it('names each structural problem with its line', () => {
    const seen = new Set<string>(['dup']);
    const cases: Array<[string, string, string | null]> = [
      ['{not json', 'invalid_json_line', null],
      ['[1,2]', 'invalid_request', null],
      [line({ ...good('x'), custom_id: '' }), 'missing_required_parameter', 'custom_id'],
      [line(good('dup')), 'duplicate_custom_id', 'custom_id'],
      [line({ ...good('m'), method: 'GET' }), 'invalid_value', 'method'],
      [line({ ...good('u'), url: '/v1/chat/completions' }), 'invalid_url', 'url'],
      [line({ ...good('b'), body: 'x' }), 'invalid_value', 'body'],
    ];
    cases.forEach(([text, code, param], i) => {
      const r = parseBatchLine(text, i + 7, seen);
      expect(r).toMatchObject({ ok: false, error: { code, param, line: i + 7 } });
    });
  });
  it('refuses a line holding a NUL or an unpaired surrogate on its own, with a storable custom_id', () => {
    const seen = new Set<string>();
    expect(parseBatchLine(line({ ...good('p'), body: { ...good('p').body, prompt: 'a\u0000b' } }), 1, seen)).toMatchObject({
      ok: true,
      customId: 'p',
      refused: { param: 'prompt', code: 'invalid_value' },
    });
    expect(parseBatchLine(line(good('n\u0000')), 2, seen)).toMatchObject({ ok: true, customId: 'n\ufffd', refused: { param: 'custom_id', code: 'invalid_value' } });
    expect(parseBatchLine(line({ ...good('s'), body: { ...good('s').body, metadata: { k: '\ud800' } } }), 3, seen)).toMatchObject({ refused: { param: 'metadata.k' } });
    // a duplicate or wrong url is quoted printable: the batch's stored errors never hold a NUL
    const dup = parseBatchLine(line(good('n\u0000')), 4, seen);
    expect(dup).toMatchObject({ ok: false, error: { code: 'duplicate_custom_id' } });
    expect(dup?.ok === false && dup.error.message.includes('\u0000')).toBe(false);
    const url = parseBatchLine(line({ ...good('u2'), url: '/x\u0000' }), 5, seen);
    expect(url).toMatchObject({ ok: false, error: { code: 'invalid_url' } });
    expect(url?.ok === false && url.error.message.includes('\u0000')).toBe(false);
  });
});

describe('batch creation', () => {
  it('takes OpenAI fields and refuses other endpoints and windows', () => {
    expect(parseBatchCreate({ input_file_id: 'file-1', endpoint: '/v1/images/edits', completion_window: '24h', metadata: { a: 'b' } })).toMatchObject({ inputFileId: 'file-1', metadata: { a: 'b' } });
    expect(() => parseBatchCreate({ input_file_id: 'f', endpoint: '/v1/chat/completions', completion_window: '24h' })).toThrow(/endpoint/);
    expect(() => parseBatchCreate({ input_file_id: 'f', endpoint: '/v1/images/edits', completion_window: '1h' })).toThrow(/completion_window/);
    expect(() => parseBatchCreate({ endpoint: '/v1/images/edits', completion_window: '24h' })).toThrow(/input_file_id/);
  });
});

describe('batch ids', () => {
  const created = new Date('2026-11-23T10:00:00Z');
  it('a line has one job id, the same on every run; a batch’s children sort by line', () => {
    const a = batchChildJobId('batch_a', created, 1);
    expect(a).toMatch(/^job_[0-9a-z]{26}$/);
    expect(batchChildJobId('batch_a', created, 1)).toBe(a);
    expect(batchChildJobId('batch_b', created, 1)).not.toBe(a);
    const ids = [1, 2, 10, 36, 999, 50_000].map((n) => batchChildJobId('batch_a', created, n));
    expect([...ids].sort()).toEqual(ids);
  });
  it('request and result file ids are stable too', () => {
    expect(batchRequestId('batch_a', 3)).toBe(batchRequestId('batch_a', 3));
    expect(batchRequestId('batch_a', 3)).not.toBe(batchRequestId('batch_a', 4));
    expect(batchResultFileId('batch_a', created, 'output')).toMatch(/^file-[0-9a-z]{26}$/);
    expect(batchResultFileId('batch_a', created, 'output')).not.toBe(batchResultFileId('batch_a', created, 'error'));
  });
});

describe('the batch object', () => {
  it('lists at most 100 line errors, then says how many there were', () => {
    const errors = Array.from({ length: 150 }, (_, i) => ({ code: 'invalid_json_line', message: `line ${i + 1}`, line: i + 1, param: null }));
    const list = batchErrorList(errors, 150);
    expect(list.data).toHaveLength(101);
    expect(list.data[100]).toMatchObject({ code: 'too_many_errors', line: null });
    expect(batchErrorList(errors.slice(0, 3), 3).data).toHaveLength(3);
  });
  it('is OpenAI’s shape; expired_at shows once the batch is expired; empty metadata is null', () => {
    const at = new Date('2026-11-23T10:00:00Z');
    const view = {
      id: 'batch_x', status: 'in_progress' as const, endpoint: '/v1/images/edits', inputFileId: 'file-1', completionWindow: '24h', errors: null,
      outputFileId: null, errorFileId: null, total: 3, completed: 1, failed: 1, metadata: {}, createdAt: at, inProgressAt: at,
      expiresAt: new Date(at.getTime() + 86_400_000), finalizingAt: null, completedAt: null, failedAt: null, expiredAt: at, cancellingAt: null, cancelledAt: null,
    };
    const o = batchObject(view);
    expect(Object.keys(o)).toEqual([
      'id', 'object', 'endpoint', 'errors', 'input_file_id', 'completion_window', 'status', 'output_file_id', 'error_file_id', 'created_at', 'in_progress_at',
      'expires_at', 'finalizing_at', 'completed_at', 'failed_at', 'expired_at', 'cancelling_at', 'cancelled_at', 'request_counts', 'metadata',
    ]);
    expect(o).toMatchObject({ object: 'batch', expired_at: null, metadata: null, request_counts: { total: 3, completed: 1, failed: 1 }, expires_at: 1795514400 });
    expect(batchObject({ ...view, status: 'expired', metadata: { a: 'b' } })).toMatchObject({ expired_at: 1795428000, metadata: { a: 'b' } });
  });
});
