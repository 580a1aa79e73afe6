import { Readable } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import { readLines } from './lines';

const collect = async (chunks: string[], max = 100) => {
  const out = [];
  for await (const l of readLines(Readable.from(chunks.map((c) => Buffer.from(c))), max)) out.push(l);
  return out;
};

describe('readLines', () => {
  it('splits on newlines across chunks, keeps blank lines numbered, takes a last line without a newline', async () => {
    const lines = await collect(['{"a"', ':1}\r\n\n{"b":2', '}\n{"c":3}']);
    expect(lines.map((l) => [l.line, l.text])).toEqual([
      [1, '{"a":1}'],
      [2, ''],
      [3, '{"b":2}'],
      [4, '{"c":3}'],
    ]);
  });
  it('reports a line over the limit without its text, and goes on', async () => {
    const lines = await collect(['short\n', 'x'.repeat(60), 'x'.repeat(60), '\nafter\n'], 100);
    expect(lines.map((l) => [l.line, l.text, l.bytes])).toEqual([
      [1, 'short', 5],
      [2, null, 120],
      [3, 'after', 5],
    ]);
  });
  it('drops a byte order mark and decodes UTF-8 split between chunks', async () => {
    const text = Buffer.from('\ufeff{"p":"é"}\n');
    const lines = [];
    for await (const l of readLines(Readable.from([text.subarray(0, 10), text.subarray(10)]), 100)) lines.push(l.text);
    expect(lines).toEqual(['{"p":"é"}']);
  });
  it('yields nothing for an empty stream or a lone trailing newline', async () => {
    expect(await collect([])).toEqual([]);
    expect((await collect(['a\n'])).length).toBe(1);
  });
});
