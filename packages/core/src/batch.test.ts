import { describe, expect, it } from '@jest/globals';
import { parseBatchCreate, parseBatchLine } from './batch';

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
});

describe('batch creation', () => {
  it('takes OpenAI fields and refuses other endpoints and windows', () => {
    expect(parseBatchCreate({ input_file_id: 'file-1', endpoint: '/v1/images/edits', completion_window: '24h', metadata: { a: 'b' } })).toMatchObject({ inputFileId: 'file-1', metadata: { a: 'b' } });
    expect(() => parseBatchCreate({ input_file_id: 'f', endpoint: '/v1/chat/completions', completion_window: '24h' })).toThrow(/endpoint/);
    expect(() => parseBatchCreate({ input_file_id: 'f', endpoint: '/v1/images/edits', completion_window: '1h' })).toThrow(/completion_window/);
    expect(() => parseBatchCreate({ endpoint: '/v1/images/edits', completion_window: '24h' })).toThrow(/input_file_id/);
  });
});
