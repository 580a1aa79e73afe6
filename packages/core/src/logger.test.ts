import { PassThrough } from 'node:stream';
import { describe, expect, it } from '@jest/globals';
import { createLogger } from './logger';

/** A stand-in for standard output that keeps what is written; a terminal when `tty`. */
function sink(tty: boolean) {
  const stream = Object.assign(new PassThrough(), { isTTY: tty });
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
  return { stream, text: () => text };
}

describe('createLogger', () => {
  it('writes JSON lines when the output is not a terminal', () => {
    const out = sink(false);
    createLogger('worker', { LOG_LEVEL: 'info', LOG_FORMAT: 'auto' }, out.stream).info({ jobId: 'job_1' }, 'edit finished');
    const line = JSON.parse(out.text().trim());
    expect(line).toMatchObject({ level: 30, name: 'worker', jobId: 'job_1', msg: 'edit finished' });
  });

  it('writes readable lines on a terminal, and honours LOG_LEVEL', () => {
    const out = sink(true);
    const log = createLogger('api', { LOG_LEVEL: 'warn', LOG_FORMAT: 'auto' }, out.stream);
    log.info('not shown');
    log.warn({ port: 8080 }, 'listening');
    const text = out.text();
    expect(text).not.toContain('not shown');
    expect(text).toContain('listening');
    expect(text).toContain('WARN');
    // coloured for a terminal
    expect(text).toContain('\u001b[');
    expect(text.split('\u001b').map((part) => part.replace(/^\[\d+m/, '')).join('')).toContain('port: 8080');
    expect(() => JSON.parse(text.trim())).toThrow();
  });

  it('LOG_FORMAT forces either', () => {
    const json = sink(true);
    createLogger('api', { LOG_LEVEL: 'info', LOG_FORMAT: 'json' }, json.stream).info('hello');
    expect(JSON.parse(json.text().trim())).toMatchObject({ msg: 'hello' });
    const pretty = sink(false);
    createLogger('api', { LOG_LEVEL: 'info', LOG_FORMAT: 'pretty' }, pretty.stream).info('hello');
    expect(pretty.text()).toMatch(/INFO.*\(api\): hello/);
    // no colour codes when the output is not a terminal
    expect(pretty.text()).not.toContain('\u001b[');
  });
});
