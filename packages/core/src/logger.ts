import pino, { type Logger } from 'pino';
import pretty from 'pino-pretty';

export type LogFormat = 'auto' | 'json' | 'pretty';

/**
 * The one place that decides how a process logs. JSON lines (pino's own, one object per line, for a
 * log collector) unless standard output is a terminal: then pino-pretty's readable lines (time,
 * level, name, message, fields), written synchronously so nothing is lost at exit. LOG_FORMAT forces
 * either. `out` is where the lines go: standard output unless a caller (a test) says otherwise.
 */
export function createLogger(name: string, env: { LOG_LEVEL: string; LOG_FORMAT: LogFormat }, out: NodeJS.WritableStream & { isTTY?: boolean; fd?: number } = process.stdout): Logger {
  const usePretty = env.LOG_FORMAT === 'pretty' || (env.LOG_FORMAT === 'auto' && out.isTTY === true);
  const options = { level: env.LOG_LEVEL, name };
  if (!usePretty) return out === process.stdout ? pino(options) : pino(options, out);
  return pino(options, pretty({ colorize: out.isTTY === true, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', sync: true, destination: out }));
}
