/**
 * Server-Sent Events over fetch: EventSource cannot send the Authorization header, so the console
 * reads `GET /v1/jobs/{id}/events` with fetch and a stream reader and parses the event stream itself
 * (the WHATWG rules: `event`, `data` lines joined by newlines, `id`, comments, CRLF or LF).
 */

export interface SseEvent {
  event: string;
  data: string;
  id: string | undefined;
}

/** Incremental parser: feed it text as it arrives; it calls `onEvent` for each complete event. */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private id: string | undefined;
  /** the last `id` seen: what a reconnect sends as Last-Event-ID */
  lastEventId: string | undefined;

  constructor(private readonly onEvent: (e: SseEvent) => void) {}

  feed(chunk: string): void {
    this.buffer += chunk;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) return;
      // a lone \r at the very end may be the first half of \r\n: wait for more
      if (match[0] === '\r' && match.index === this.buffer.length - 1) return;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      this.line(line);
    }
  }

  /** The stream ended: an event without its blank line is dropped, as browsers do. */
  end(): void {
    // a lone \r held back for a possible \n was a line end after all
    if (this.buffer.endsWith('\r')) this.feed('\n');
    this.buffer = '';
    this.reset();
  }

  private line(line: string): void {
    if (line === '') {
      if (this.data.length > 0) {
        const e: SseEvent = { event: this.event || 'message', data: this.data.join('\n'), id: this.id };
        if (this.id !== undefined) this.lastEventId = this.id;
        this.reset();
        this.onEvent(e);
      } else this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const name = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (name === 'event') this.event = value;
    else if (name === 'data') this.data.push(value);
    else if (name === 'id' && !value.includes('\0')) this.id = value;
  }

  private reset(): void {
    this.event = '';
    this.data = [];
    this.id = undefined;
  }
}

export interface FollowOptions {
  /** opens the stream; `lastEventId` is set on a reconnect */
  open(lastEventId: string | undefined, signal: AbortSignal): Promise<Response>;
  onEvent(e: SseEvent): void;
  /** true once the stream said all it will (the final event); otherwise a closed stream is reopened */
  done(): boolean;
  signal: AbortSignal;
  /** reconnects after a dropped connection before giving up */
  maxReconnects?: number;
  onReconnect?(attempt: number): void;
}

/**
 * Reads an event stream to its end, reopening it (with Last-Event-ID) when the connection drops
 * before `done()`; a refused reopen (4xx) is thrown.
 */
export async function followEventStream(opts: FollowOptions): Promise<void> {
  const max = opts.maxReconnects ?? 5;
  let lastEventId: string | undefined;
  for (let attempt = 0; ; attempt++) {
    const parser = new SseParser(opts.onEvent);
    try {
      const res = await opts.open(lastEventId, opts.signal);
      if (!res.body) throw new Error('the stream has no body');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.feed(value);
      }
      parser.end();
    } catch (err) {
      if (opts.signal.aborted) return;
      // an answer of the server (a 4xx): reconnecting would get the same
      if (err instanceof Error && 'status' in err && typeof err.status === 'number' && err.status >= 400 && err.status < 500) throw err;
      if (attempt >= max) throw err;
    }
    lastEventId = parser.lastEventId ?? lastEventId;
    if (opts.done() || opts.signal.aborted) return;
    if (attempt >= max) throw new Error('the event stream kept closing before the job ended');
    opts.onReconnect?.(attempt + 1);
    await sleep(Math.min(500 * 2 ** attempt, 5000), opts.signal);
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}
