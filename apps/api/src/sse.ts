import type { Response } from 'express';

/** A `text/event-stream` answer: named events with JSON data, comments to keep idle proxies from closing it. */
export interface EventStream {
  send(event: string, data: unknown, id?: string): void;
  comment(text: string): void;
  end(): void;
}

export function openEventStream(res: Response): EventStream {
  res.status(200).set({
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    // nginx and similar proxies would otherwise buffer the stream
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  const write = (text: string) => {
    if (!res.writableEnded && !res.destroyed) res.write(text);
  };
  return {
    send(event, data, id) {
      write(`${id ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
    },
    comment(text) {
      write(`: ${text}\n\n`);
    },
    end() {
      if (!res.writableEnded) res.end();
    },
  };
}
