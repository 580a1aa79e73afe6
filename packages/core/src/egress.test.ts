import { describe, expect, it } from '@jest/globals';
import { checkEgress, classifyAddress, EgressError } from './egress';

describe('classifyAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['10.0.0.1', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['100.127.255.255', 'private'],
    ['169.254.169.254', 'link_local'],
    ['0.0.0.0', 'unspecified'],
    ['224.0.0.1', 'multicast'],
    ['239.255.255.250', 'multicast'],
    ['255.255.255.255', 'reserved'],
    ['198.18.0.1', 'reserved'],
    ['192.0.2.10', 'reserved'],
  ])('IPv4 %s is %s', (ip, cls) => {
    expect(classifyAddress(ip)).toBe(cls);
  });

  it.each(['8.8.8.8', '1.1.1.1', '172.15.255.255', '172.32.0.1', '100.63.255.255', '100.128.0.1', '169.253.0.1', '11.0.0.1', '192.169.0.1'])('IPv4 %s is public', (ip) => {
    expect(classifyAddress(ip)).toBe('public');
  });

  it.each([
    ['::1', 'loopback'],
    ['0:0:0:0:0:0:0:1', 'loopback'],
    ['::', 'unspecified'],
    ['fc00::1', 'private'],
    ['fd12:3456:789a::1', 'private'],
    ['fe80::1', 'link_local'],
    ['fe80::1%eth0', 'link_local'],
    ['febf::1', 'link_local'],
    ['fec0::1', 'private'],
    ['ff02::1', 'multicast'],
    ['2001:db8::1', 'reserved'],
    ['100::1', 'reserved'],
    // IPv4 inside IPv6 is judged as the IPv4
    ['::ffff:127.0.0.1', 'loopback'],
    ['::ffff:7f00:1', 'loopback'],
    ['::ffff:169.254.169.254', 'link_local'],
    ['::ffff:10.0.0.1', 'private'],
    ['::127.0.0.1', 'loopback'],
    ['64:ff9b::10.0.0.1', 'private'],
    ['2002:7f00:0001::1', 'loopback'],
    ['[::1]', 'loopback'],
  ])('IPv6 %s is %s', (ip, cls) => {
    expect(classifyAddress(ip)).toBe(cls);
  });

  it.each(['2606:4700:4700::1111', '2a00:1450:4001:82a::200e', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:0808:0808::1'])('IPv6 %s is public', (ip) => {
    expect(classifyAddress(ip)).toBe('public');
  });

  it.each(['example.com', '1.2.3', '::g', '1:2:3:4:5:6:7:8:9', '1::2::3', ''])('%s is not an address', (s) => {
    expect(classifyAddress(s)).toBe('invalid');
  });
});

describe('checkEgress', () => {
  const resolvesTo = (...addresses: string[]) => async () => addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  const refusal = async (p: Promise<unknown>) => {
    try {
      await p;
    } catch (err) {
      return err instanceof EgressError ? err.reason : 'other';
    }
    return 'allowed';
  };

  it('refuses other schemes and literal private addresses', async () => {
    expect(await refusal(checkEgress('ftp://example.com/x', { allowPrivate: false }))).toBe('scheme');
    expect(await refusal(checkEgress('file:///etc/passwd', { allowPrivate: false }))).toBe('scheme');
    expect(await refusal(checkEgress('not a url', { allowPrivate: false }))).toBe('invalid_url');
    expect(await refusal(checkEgress('http://169.254.169.254/latest/meta-data', { allowPrivate: false }))).toBe('forbidden_address');
    expect(await refusal(checkEgress('http://10.0.0.1/', { allowPrivate: false }))).toBe('forbidden_address');
    expect(await refusal(checkEgress('http://[::1]:8080/', { allowPrivate: false }))).toBe('forbidden_address');
    expect(await refusal(checkEgress('http://[::ffff:127.0.0.1]/', { allowPrivate: false }))).toBe('forbidden_address');
  });

  it('checks every address a name resolves to, and returns the one to connect to', async () => {
    expect(await refusal(checkEgress('https://hooks.example/x', { allowPrivate: false, lookup: resolvesTo('93.184.216.34', '10.1.2.3') }))).toBe('forbidden_address');
    const ok = await checkEgress('https://hooks.example/x', { allowPrivate: false, lookup: resolvesTo('93.184.216.34', '2606:2800:220:1::1') });
    expect(ok).toMatchObject({ hostname: 'hooks.example', address: '93.184.216.34', family: 4 });
    expect(await refusal(checkEgress('https://nowhere.example/', { allowPrivate: false, lookup: async () => Promise.reject(Object.assign(new Error('x'), { code: 'ENOTFOUND' })) }))).toBe('unresolvable');
  });

  it('allows private addresses only when told to', async () => {
    const ok = await checkEgress('http://localhost:3000/hook', { allowPrivate: true, lookup: resolvesTo('127.0.0.1') });
    expect(ok).toMatchObject({ address: '127.0.0.1', family: 4 });
    expect(await refusal(checkEgress('http://localhost:3000/hook', { allowPrivate: false, lookup: resolvesTo('127.0.0.1') }))).toBe('forbidden_address');
  });

  it('never tells what a name resolves to', async () => {
    const message = await checkEgress('http://internal.corp/x', { allowPrivate: false, lookup: resolvesTo('93.184.216.34', '10.9.8.7') }).catch((err: Error) => err.message);
    expect(message).toContain("'internal.corp'");
    expect(message).not.toMatch(/10\.9\.8\.7|private|loopback/);
    // a literal is the client's own text: named, with its kind
    expect(await checkEgress('http://127.0.0.1/', { allowPrivate: false }).catch((err: Error) => err.message)).toContain('127.0.0.1 is a loopback address');
  });
});
