/** One line of a JSONL file: 1-based number, text (null when longer than allowed), bytes. */
export interface Line {
  line: number;
  /** null when the line is longer than `maxBytes`: its bytes were skipped, never held */
  text: string | null;
  bytes: number;
}

/**
 * The lines of a stream, one at a time: only the line being read is held (at most `maxBytes` of
 * it), never the file. `\n` ends a line (a `\r` before it is dropped); a last line without one
 * counts; a UTF-8 byte order mark at the start is dropped.
 */
export async function* readLines(body: AsyncIterable<Buffer | Uint8Array | string>, maxBytes: number): AsyncGenerator<Line> {
  let parts: Buffer[] = [];
  let size = 0;
  let tooLong = false;
  let line = 0;
  const take = (): Line => {
    line++;
    let text: string | null = null;
    if (!tooLong) {
      text = Buffer.concat(parts).toString('utf8');
      if (text.endsWith('\r')) text = text.slice(0, -1);
      if (line === 1 && text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    const out = { line, text, bytes: size };
    parts = [];
    size = 0;
    tooLong = false;
    return out;
  };
  for await (const raw of body) {
    const chunk = typeof raw === 'string' ? Buffer.from(raw) : Buffer.isBuffer(raw) ? raw : Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength);
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      const end = nl < 0 ? chunk.length : nl;
      size += end - start;
      if (!tooLong && size > maxBytes) {
        tooLong = true;
        parts = [];
      }
      // a copy: a view would pin the whole stream chunk for as long as the line lives
      if (!tooLong && end > start) parts.push(Buffer.from(chunk.subarray(start, end)));
      if (nl < 0) break;
      yield take();
      start = nl + 1;
    }
  }
  if (size > 0) yield take();
}
