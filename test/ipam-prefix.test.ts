/** IPv6 prefix arithmetic for IPAM (src/model/ipv6-prefix.ts) and EUI-64 (src/model/eui64.ts). */
import { describe, expect, it } from 'vitest';
import { eui64InterfaceId, parseMac, slaacAddress } from '../src/model/eui64.js';
import {
  lowestFreeSubnet,
  parseDnsServers,
  parseIpv6Prefix,
  parsePool,
  parseSubnet,
  poolSize,
  prefixContains,
  subnetNumber,
} from '../src/model/ipv6-prefix.js';

const numbers = (...subnets: string[]) => subnets.map((text) => subnetNumber(parseSubnet(text)));

describe('parsing prefixes', () => {
  it('prints every prefix in RFC 5952 form', () => {
    expect(parseIpv6Prefix('2001:0DB8:0100:0000:0000:0000:0000:0000/48').text).toBe('2001:db8:100::/48');
    // The longest run of zeros is compressed, not the first.
    expect(parseIpv6Prefix('2001:db8:0:0:1::/80').text).toBe('2001:db8:0:0:1::/80');
    expect(parseIpv6Prefix('fd00::/8').text).toBe('fd00::/8');
    expect(parseSubnet('2001:db8:100:1:0::/64').text).toBe('2001:db8:100:1::/64');
  });

  it.each([
    ['2001:db8::', /is not an IPv6 prefix: write it as address\/length/],
    ['10.0.0.0/8', /"10.0.0.0\/8" is not an IPv6 prefix \(IPAM is IPv6 only\)/],
    ['2001:db8::/064', /prefix length must be a whole number 0…128 without leading zeros/],
    ['2001:db8::/129', /prefix length must be/],
    ['2001:db8::/', /prefix length must be/],
    ['2001:db8::1/64', /"2001:db8::1\/64" has host bits set; the prefix is 2001:db8::\/64/],
    ['fe80::%eth0/64', /is not an IPv6 prefix/],
    ['2001:db8::/48/64', /prefix length must be/],
    ['garbage/64', /is not an IPv6 prefix/],
  ])('refuses %s', (text, message) => {
    expect(() => parseIpv6Prefix(text)).toThrow(message);
  });

  it('takes pools of length ≤ 64 that can hold tenants, and only /64s as subnets', () => {
    expect(parsePool('2001:db8:100::/48').length).toBe(48);
    expect(parsePool('2001:db8:100:7::/64').text).toBe('2001:db8:100:7::/64');
    expect(() => parsePool('2001:db8:100:7::/65')).toThrow('pool 2001:db8:100:7::/65 is longer than /64: it must hold at least one /64');
    expect(() => parsePool('ff05::/16')).toThrow('pool ff05::/16 cannot hold tenants\' addresses: it overlaps the multicast range ff00::/8');
    expect(() => parsePool('fe80::/10')).toThrow(/link-local/);
    expect(() => parsePool('::/0')).toThrow(/multicast/);
    expect(() => parsePool('::/64')).toThrow(/::\/8 \(unspecified, loopback, IPv4-mapped addresses\)/);
    expect(() => parseSubnet('2001:db8:100::/48')).toThrow('2001:db8:100::/48 is not a /64');
    expect(() => parseSubnet('fe80::/64')).toThrow(/link-local/);
  });

  it('knows what a pool contains', () => {
    const pool = parsePool('2001:db8:100::/48');
    expect(prefixContains(pool, parseSubnet('2001:db8:100:ffff::/64'))).toBe(true);
    expect(prefixContains(pool, parseSubnet('2001:db8:101::/64'))).toBe(false);
    expect(prefixContains(pool, parseSubnet('2001:db8:ff::/64'))).toBe(false);
    expect(prefixContains(pool, pool)).toBe(true);
    expect(prefixContains(parseSubnet('2001:db8:100::/64'), pool)).toBe(false);
    expect(poolSize(pool)).toBe(65536n);
    expect(poolSize(parsePool('2001:db8:100:7::/64'))).toBe(1n);
  });
});

describe('lowestFreeSubnet', () => {
  const pool = parsePool('2001:db8:100::/48');

  it('takes the pool\'s first /64 when nothing is taken', () => {
    expect(lowestFreeSubnet(pool, [])?.text).toBe('2001:db8:100::/64');
  });

  it('fills the lowest hole first, whatever order the taken ones come in', () => {
    const taken = numbers('2001:db8:100:3::/64', '2001:db8:100::/64', '2001:db8:100:1::/64', '2001:db8:100:5::/64');
    expect(lowestFreeSubnet(pool, taken)?.text).toBe('2001:db8:100:2::/64');
    expect(lowestFreeSubnet(pool, [...taken, ...numbers('2001:db8:100:2::/64')])?.text).toBe('2001:db8:100:4::/64');
    // Repeats (an entry and its index) count once.
    expect(lowestFreeSubnet(pool, [...taken, ...taken])?.text).toBe('2001:db8:100:2::/64');
  });

  it('ignores /64s outside the pool', () => {
    const taken = numbers('2001:db8:ff:ffff::/64', '2001:db8:101::/64', '2001:db8:100::/64');
    expect(lowestFreeSubnet(pool, taken)?.text).toBe('2001:db8:100:1::/64');
  });

  it('reaches the pool\'s last /64 and no further', () => {
    const small = parsePool('2001:db8:100:4::/62');
    const first3 = numbers('2001:db8:100:4::/64', '2001:db8:100:5::/64', '2001:db8:100:6::/64');
    expect(lowestFreeSubnet(small, first3)?.text).toBe('2001:db8:100:7::/64');
    expect(lowestFreeSubnet(small, [...first3, ...numbers('2001:db8:100:7::/64', '2001:db8:100:8::/64')])).toBeUndefined();
    const one = parsePool('2001:db8:100:7::/64');
    expect(lowestFreeSubnet(one, [])?.text).toBe('2001:db8:100:7::/64');
    expect(lowestFreeSubnet(one, numbers('2001:db8:100:7::/64'))).toBeUndefined();
  });

  it('works at the top of the address space and in large pools without walking them', () => {
    const top = parsePool('fd00::/8');
    expect(lowestFreeSubnet(top, [])?.text).toBe('fd00::/64');
    const wide = parsePool('2000::/3');
    const taken = Array.from({ length: 10_000 }, (_, i) => (0x2000n << 48n) + BigInt(i));
    expect(lowestFreeSubnet(wide, taken)?.text).toBe('2000:0:0:2710::/64');
  });
});

describe('name servers', () => {
  it('takes up to three plain unicast IPv6 addresses, in RFC 5952 form', () => {
    expect(parseDnsServers([])).toEqual([]);
    expect(parseDnsServers(['2001:DB8::0:53', 'fd00::53'])).toEqual(['2001:db8::53', 'fd00::53']);
  });

  it.each([
    [['192.0.2.53'], 'name server "192.0.2.53" is not a plain IPv6 address (no prefix length, no zone id)'],
    [['2001:db8::53/64'], 'name server "2001:db8::53/64" is not a plain IPv6 address'],
    [['fe80::53%eth0'], 'name server "fe80::53%eth0" is not a plain IPv6 address'],
    [['fe80::53'], 'name server fe80::53 is not a unicast address a VM can reach: it overlaps the link-local range fe80::/10'],
    [['ff02::fb'], 'it overlaps the multicast range ff00::/8'],
    [['::1'], 'it overlaps ::/8'],
    [['::ffff:192.0.2.53'], 'it overlaps ::/8'],
    [[''], 'name server "" is not a plain IPv6 address'],
    [['2001:db8::53', '2001:DB8::53'], 'name server 2001:db8::53 is given twice'],
    [['2001:db8::1', '2001:db8::2', '2001:db8::3', '2001:db8::4'], '4 name servers given; at most 3'],
  ])('refuses %j', (texts, message) => {
    expect(() => parseDnsServers(texts)).toThrow(message);
  });
});

describe('EUI-64', () => {
  const subnet = parseSubnet('2001:db8:1::/64');

  it('flips the universal/local bit and inserts ff:fe', () => {
    // 2001:db8:1::5054:ff:fed6:c2a9 in RFC 5952 form, which is how ip(8) prints it: a single zero group is not shortened to ::.
    expect(slaacAddress(subnet, parseMac('52:54:00:d6:c2:a9'))).toBe('2001:db8:1:0:5054:ff:fed6:c2a9');
    expect(eui64InterfaceId(parseMac('52:54:00:d6:c2:a9'))).toBe(0x505400fffed6c2a9n);
    // A universal (burned-in) MAC gets the bit set, a local one cleared.
    expect(slaacAddress(subnet, parseMac('00:1b:21:0a:0b:0c'))).toBe('2001:db8:1:0:21b:21ff:fe0a:b0c');
    expect(slaacAddress(subnet, parseMac('02:00:00:00:00:01'))).toBe('2001:db8:1::ff:fe00:1');
    expect(slaacAddress(parseSubnet('2001:db8:100:0::/64'), parseMac('52:54:00:d6:c2:a9'))).toBe('2001:db8:100:0:5054:ff:fed6:c2a9');
  });

  it('reads MACs as libvirt, ip and Windows write them', () => {
    expect(parseMac('52-54-00-D6-C2-A9')).toEqual(parseMac('52:54:00:d6:c2:a9'));
  });

  it.each([
    ['52:54:00:d6:c2', /is not a MAC address: write six hex bytes separated by colons/],
    ['52:54:00:d6:c2:a9:00', /is not a MAC address/],
    ['52:54-00:d6:c2:a9', /is not a MAC address/],
    ['5254.00d6.c2a9', /is not a MAC address/],
    ['52:54:00:d6:c2:g9', /is not a MAC address/],
    ['2:54:00:d6:c2:a9', /is not a MAC address/],
    ['01:00:5e:00:00:01', '01:00:5e:00:00:01 is a multicast (group) MAC address; a VM\'s NIC has a unicast one'],
    ['33:33:00:00:00:01', /multicast/],
    ['00:00:00:00:00:00', '00:00:00:00:00:00 is the all-zero MAC address'],
  ])('refuses %s', (text, message) => {
    expect(() => parseMac(text)).toThrow(message);
  });

  it('is only defined on a /64', () => {
    expect(() => slaacAddress(parsePool('2001:db8:100::/48'), parseMac('52:54:00:d6:c2:a9'))).toThrow('SLAAC with EUI-64 needs a /64');
  });
});
