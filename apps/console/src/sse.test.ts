import { describe, expect, it } from '@jest/globals';
import { followEventStream, type SseEvent, SseParser } from './sse';

const parse = (chunks: string[]) => {
  const events: SseEvent[] = [];
  const p = new SseParser((e) => events.push(e));
  for (const c of chunks) p.feed(c);
  p.end();
  return { events, last: p.lastEventId };
};

describe('SseParser', () => {
  it('reads named events with ids, skips comments, joins data lines', () => {
    const { events, last } = parse([': keep-alive\n\n', 'event: status\ndata: {"status":"queued"}\n\n', 'id: 1-0\nevent: partial_image\ndata: a\ndata: b\n\n']);
    expect(events).toEqual([
      { event: 'status', data: '{"status":"queued"}', id: undefined },
      { event: 'partial_image', data: 'a\nb', id: '1-0' },
    ]);
    expect(last).toBe('1-0');
  });

  it('copes with chunks split anywhere, CRLF and CR line ends', () => {
    const text = 'id: 7\r\nevent: job\r\ndata: {"id":"job_1"}\r\n\r\nevent: status\rdata: x\r\r';
    for (let cut = 1; cut < text.length; cut++) {
      const { events } = parse([text.slice(0, cut), text.slice(cut)]);
      expect(events).toEqual([
        { event: 'job', data: '{"id":"job_1"}', id: '7' },
        { event: 'status', data: 'x', id: undefined },
      ]);
    }
  });

  it('drops an event the stream ended in the middle of; a line without a colon is a field with no value', () => {
    expect(parse(['data\n\n', 'event: job\ndata: {"half"']).events).toEqual([{ event: 'message', data: '', id: undefined }]);
  });
});

describe('followEventStream', () => {
  const stream = (text: string) =>
    new Response(
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(text));
          c.close();
        },
      }),
    );

  it('reopens a stream that closed early with Last-Event-ID, until the final event', async () => {
    const opened: (string | undefined)[] = [];
    const seen: string[] = [];
    let done = false;
    await followEventStream({
      signal: new AbortController().signal,
      open: async (last) => {
        opened.push(last);
        return opened.length === 1 ? stream('id: 1-0\nevent: status\ndata: {}\n\n') : stream('id: 2-0\nevent: job\ndata: {}\n\n');
      },
      onEvent: (e) => {
        seen.push(e.event);
        if (e.event === 'job') done = true;
      },
      done: () => done,
    });
    expect(opened).toEqual([undefined, '1-0']);
    expect(seen).toEqual(['status', 'job']);
  });

  it('does not reopen after a 4xx answer', async () => {
    const err = Object.assign(new Error('gone'), { status: 404 });
    let calls = 0;
    await expect(
      followEventStream({
        signal: new AbortController().signal,
        open: async () => {
          calls++;
          throw err;
        },
        onEvent: () => undefined,
        done: () => false,
      }),
    ).rejects.toBe(err);
    expect(calls).toBe(1);
  });
});
