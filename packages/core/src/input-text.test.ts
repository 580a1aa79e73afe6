import { describe, expect, it } from '@jest/globals';
import { findInputFlaw, inputFlawError, MAX_INPUT_DEPTH, paramName, printable, storableJson, storableText, textFlaw } from './input-text';

describe('textFlaw', () => {
  it.each([
    ['plain', null],
    ['emoji 😀 (a surrogate pair)', null],
    ['a\u0000b', 'nul'],
    ['\ud800', 'lone_surrogate'],
    ['x\udc00', 'lone_surrogate'],
    ['\udc00\ud800', 'lone_surrogate'],
    ['\ufffd', null],
  ])('%j → %s', (s, kind) => {
    expect(textFlaw(s)).toBe(kind);
  });
});

describe('findInputFlaw', () => {
  it('finds a flaw in a value with its path', () => {
    expect(findInputFlaw({ prompt: 'ok', images: [{ file_id: 'file-1' }, { file_id: 'file-\u0000' }] })).toEqual({ kind: 'nul', path: ['images', 1, 'file_id'], inKey: false });
  });
  it('finds a flaw in a key, naming the object holding it', () => {
    expect(findInputFlaw({ metadata: { 'a\u0000': 'x' } })).toEqual({ kind: 'nul', path: ['metadata'], inKey: true });
  });
  it('names the earliest flaw', () => {
    expect(findInputFlaw({ a: 'x\u0000', b: '\ud800' })?.path).toEqual(['a']);
  });
  it('takes clean values, dates, buffers, numbers', () => {
    expect(findInputFlaw({ a: 1, b: [true, null, 'x'], c: new Date(), d: Buffer.from([0]) })).toBeNull();
  });
  it('refuses nesting deeper than the limit without recursing (5,000 levels)', () => {
    let deep: unknown = 'x';
    for (let i = 0; i < 5000; i++) deep = { a: deep };
    expect(findInputFlaw(deep)).toMatchObject({ kind: 'too_deep' });
    let ok: unknown = 'x';
    for (let i = 0; i < MAX_INPUT_DEPTH - 1; i++) ok = [ok];
    expect(findInputFlaw(ok)).toBeNull();
  });
});

describe('errors and storable forms', () => {
  it('400 invalid_value naming the field, never quoting the text', () => {
    const err = inputFlawError({ kind: 'nul', path: ['metadata', 'color'], inKey: false });
    expect(err.toBody()).toEqual({ message: expect.stringContaining('metadata.color'), type: 'invalid_request_error', param: 'metadata.color', code: 'invalid_value' });
    expect(inputFlawError({ kind: 'lone_surrogate', path: [], inKey: false }, ['purpose']).param).toBe('purpose');
    expect(inputFlawError({ kind: 'nul', path: [], inKey: true }).message).toContain('a field name');
  });
  it('paramName escapes a flawed key', () => {
    expect(paramName(['a\u0000b', 0])).toBe('a\\u0000b[0]');
  });
  it('storable and printable forms hold no flaw', () => {
    expect(storableText('a\u0000b\ud800')).toBe('a\ufffdb\ufffd');
    expect(printable('a\u0000b')).toBe('a\\u0000b');
    const doc = storableJson({ error: { message: 'got \u0000', ['k\ud800']: ['\udc00'] } });
    expect(findInputFlaw(doc)).toBeNull();
    expect(doc.error.message).toBe('got \ufffd');
  });
});
