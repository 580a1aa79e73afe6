/** Formatting of what the API returns (unix seconds, USD, bytes); pure, so unit tests run them in Node. */

export function dateTime(unixSeconds: number | null | undefined): string {
  if (unixSeconds === null || unixSeconds === undefined) return '—';
  const d = new Date(unixSeconds * 1000);
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

/** The UTC day of a bucket start, `YYYY-MM-DD` (usage buckets are UTC days). */
export function utcDay(unixSeconds: number): string {
  return new Date(unixSeconds * 1000).toISOString().slice(0, 10);
}

/** A duration between two unix times, or from one until now. */
export function duration(fromSeconds: number | null | undefined, toSeconds: number | null | undefined): string {
  if (fromSeconds === null || fromSeconds === undefined) return '—';
  const end = toSeconds ?? Math.floor(Date.now() / 1000);
  return seconds(Math.max(0, end - fromSeconds));
}

export function seconds(s: number): string {
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function usd(value: number | null | undefined): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return '—';
  if (value === 0) return '$0.00';
  // small per-image costs keep their digits: $0.0110, not $0.01
  return value < 1 ? `$${value.toFixed(4)}` : `$${value.toFixed(2)}`;
}

export function money(value: number, currency: string): string {
  return currency.toLowerCase() === 'usd' ? usd(value) : `${value.toFixed(4)} ${currency.toUpperCase()}`;
}

export function bytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

/** `job_01abc…` → shorter for narrow tables, the full id stays in the link's title. */
export function shortId(id: string): string {
  return id.length > 18 ? `${id.slice(0, 10)}…${id.slice(-6)}` : id;
}

/** Local midnight of a `YYYY-MM-DD` date input, in unix seconds (the end of the day with `endOfDay`). */
export function dateInputToUnix(value: string, endOfDay = false): number | undefined {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(value);
  if (!m) return undefined;
  const d = new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3]));
  if (endOfDay) d.setDate(d.getDate() + 1);
  return Math.floor(d.getTime() / 1000) - (endOfDay ? 1 : 0);
}

/** `YYYY-MM-DD` of a local date, for date inputs. */
export function toDateInput(d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}
