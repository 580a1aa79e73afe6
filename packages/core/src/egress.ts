import { lookup as dnsLookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { invalidRequest, type ServiceError } from './errors';

/**
 * The egress guard: the service only calls URLs that its clients give it (webhooks, later
 * image_url) when they point at the public internet. Loopback, link-local (cloud metadata at
 * 169.254.169.254), private, CGNAT, multicast and reserved addresses are refused, for IPv4 and
 * IPv6, including IPv6 forms that embed an IPv4 address. The classifier is pure; `checkEgress`
 * resolves the host (every address) through an injected lookup, so callers can pin the connection
 * to the address that was checked (a DNS rebinding between check and connect cannot slip past).
 */
export type AddressClass = 'public' | 'loopback' | 'private' | 'link_local' | 'unspecified' | 'multicast' | 'reserved' | 'invalid';

type V4Range = [base: number, bits: number, cls: AddressClass];

const v4 = (s: string): number => s.split('.').reduce((n, p) => n * 256 + Number(p), 0);

const V4_RANGES: V4Range[] = [
  [v4('0.0.0.0'), 8, 'unspecified'],
  [v4('10.0.0.0'), 8, 'private'],
  [v4('100.64.0.0'), 10, 'private'], // CGNAT
  [v4('127.0.0.0'), 8, 'loopback'],
  [v4('169.254.0.0'), 16, 'link_local'], // cloud metadata lives here
  [v4('172.16.0.0'), 12, 'private'],
  [v4('192.0.0.0'), 24, 'reserved'],
  [v4('192.0.2.0'), 24, 'reserved'],
  [v4('192.88.99.0'), 24, 'reserved'],
  [v4('192.168.0.0'), 16, 'private'],
  [v4('198.18.0.0'), 15, 'reserved'],
  [v4('198.51.100.0'), 24, 'reserved'],
  [v4('203.0.113.0'), 24, 'reserved'],
  [v4('224.0.0.0'), 4, 'multicast'],
  [v4('240.0.0.0'), 4, 'reserved'], // includes 255.255.255.255
];

function classifyV4(n: number): AddressClass {
  for (const [base, bits, cls] of V4_RANGES) {
    const size = 2 ** (32 - bits);
    if (n >= base && n < base + size) return cls;
  }
  return 'public';
}

/** Eight 16-bit groups, or null when not an IPv6 literal. */
function parseV6(text: string): number[] | null {
  let s = text.toLowerCase();
  const zone = s.indexOf('%');
  if (zone >= 0) s = s.slice(0, zone);
  // a trailing dotted IPv4 (::ffff:1.2.3.4) becomes two groups
  const dotted = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (dotted) {
    if (isIP(dotted[2]!) !== 4) return null;
    const n = v4(dotted[2]!);
    s = `${dotted[1]}${(n >>> 16).toString(16)}:${(n & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return null;
  const part = (h: string) => (h === '' ? [] : h.split(':'));
  const head = part(halves[0]!);
  const tail = halves.length === 2 ? part(halves[1]!) : [];
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null;
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  if (groups.some((g) => !/^[0-9a-f]{1,4}$/.test(g))) return null;
  return groups.map((g) => Number.parseInt(g, 16));
}

function classifyV6(g: number[]): AddressClass {
  const [a = 0, b = 0] = g;
  const embeddedV4 = (hi: number, lo: number) => classifyV4(hi * 65536 + lo);
  const zeroUpTo = (n: number) => g.slice(0, n).every((x) => x === 0);
  if (zeroUpTo(8)) return 'unspecified';
  if (zeroUpTo(7) && g[7] === 1) return 'loopback';
  // ::ffff:a.b.c.d (IPv4-mapped) and ::a.b.c.d (IPv4-compatible, deprecated): judged as the IPv4
  if (zeroUpTo(5) && (g[5] === 0xffff || g[5] === 0)) return embeddedV4(g[6]!, g[7]!);
  // NAT64 64:ff9b::/96 reaches the embedded IPv4
  if (a === 0x64 && b === 0xff9b && g.slice(2, 6).every((x) => x === 0)) return embeddedV4(g[6]!, g[7]!);
  // 6to4 2002:AABB:CCDD::/48 carries an IPv4 in bits 16-48
  if (a === 0x2002) return embeddedV4(b, g[2]!);
  if ((a & 0xfe00) === 0xfc00) return 'private'; // fc00::/7 unique local
  if ((a & 0xffc0) === 0xfe80) return 'link_local'; // fe80::/10
  if ((a & 0xffc0) === 0xfec0) return 'private'; // fec0::/10 site-local (deprecated)
  if ((a & 0xff00) === 0xff00) return 'multicast';
  if (a === 0x100 && g.slice(1, 4).every((x) => x === 0)) return 'reserved'; // 100::/64 discard
  if (a === 0x2001 && b === 0xdb8) return 'reserved'; // documentation
  if (a === 0x2001 && b === 0) return 'reserved'; // Teredo: carries an obfuscated IPv4
  return 'public';
}

/** What kind of address an IP literal is; anything not an IP literal is 'invalid'. */
export function classifyAddress(ip: string): AddressClass {
  const bare = ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
  if (isIP(bare) === 4) return classifyV4(v4(bare));
  const groups = parseV6(bare);
  return groups ? classifyV6(groups) : 'invalid';
}

export type LookupAll = (hostname: string) => Promise<{ address: string; family: number }[]>;

const systemLookup: LookupAll = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

export interface EgressTarget {
  url: URL;
  /** the host without IPv6 brackets */
  hostname: string;
  /** the checked address to connect to */
  address: string;
  family: 4 | 6;
}

export type EgressRefusal = 'invalid_url' | 'scheme' | 'unresolvable' | 'forbidden_address';

export class EgressError extends Error {
  constructor(
    readonly reason: EgressRefusal,
    message: string,
  ) {
    super(message);
    this.name = 'EgressError';
  }
}

/**
 * Checks a URL the service is asked to call: http(s) only, and every address its host resolves to
 * must be public (unless `allowPrivate`). Returns the address to connect to.
 */
export async function checkEgress(raw: string, opts: { allowPrivate: boolean; lookup?: LookupAll }): Promise<EgressTarget> {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new EgressError('invalid_url', 'not an absolute URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new EgressError('scheme', `scheme '${url.protocol.replace(':', '')}' is not allowed; use http or https`);
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  if (!hostname) throw new EgressError('invalid_url', 'the URL has no host');
  let addresses: { address: string; family: number }[];
  if (isIP(hostname)) {
    addresses = [{ address: hostname, family: isIP(hostname) }];
  } else {
    try {
      addresses = await (opts.lookup ?? systemLookup)(hostname);
    } catch (err) {
      const code = (err as { code?: string }).code;
      throw new EgressError('unresolvable', `host '${hostname}' does not resolve${code ? ` (${code})` : ''}`);
    }
    if (addresses.length === 0) throw new EgressError('unresolvable', `host '${hostname}' does not resolve`);
  }
  if (!opts.allowPrivate) {
    for (const a of addresses) {
      const cls = classifyAddress(a.address);
      if (cls === 'public') continue;
      // a literal address is the client's own text; what a name resolves to inside our network is never told
      if (isIP(hostname)) throw new EgressError('forbidden_address', `${hostname} is a ${cls.replace('_', '-')} address; only public internet addresses are allowed`);
      throw new EgressError('forbidden_address', `host '${hostname}' does not resolve to a public internet address; only those are allowed`);
    }
  }
  const first = addresses[0]!;
  return { url, hostname, address: first.address, family: first.family === 6 ? 6 : 4 };
}

/**
 * A `lookup` for node's http(s).request that always answers with the checked address: the
 * connection goes where the guard looked, whatever the name resolves to by then (DNS rebinding).
 */
export function pinnedLookup(target: Pick<EgressTarget, 'address' | 'family'>) {
  return (_host: string, options: { all?: boolean } | undefined, callback: (...args: unknown[]) => void): void => {
    const entry = { address: target.address, family: target.family };
    if (options?.all) callback(null, [entry]);
    else callback(null, entry.address, entry.family);
  };
}

/**
 * The submission-time check: a clear 400 naming the parameter. Returns the normalised URL. The
 * check is repeated at delivery time (the host may resolve elsewhere by then).
 */
export async function assertEgressAllowed(raw: string, opts: { allowPrivate: boolean; param: string; codePrefix?: string; lookup?: LookupAll }): Promise<string> {
  try {
    return (await checkEgress(raw, opts)).url.toString();
  } catch (err) {
    if (err instanceof EgressError) throw egressRequestError(err, opts.param, opts.codePrefix);
    throw err;
  }
}

/** 400 naming the parameter; codes `<prefix>_forbidden`, `<prefix>_unresolvable` (prefix: the param). */
export function egressRequestError(err: EgressError, param: string, codePrefix = param): ServiceError {
  if (err.reason === 'forbidden_address') return invalidRequest(`${param} is not allowed: ${err.message}`, param, `${codePrefix}_forbidden`);
  if (err.reason === 'unresolvable') return invalidRequest(`${param} cannot be used: ${err.message}`, param, `${codePrefix}_unresolvable`);
  return invalidRequest(`${param} must be an absolute http(s) URL: ${err.message}`, param, 'invalid_value');
}
