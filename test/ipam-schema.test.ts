/** IPAM keys and values in the etcd data model (src/store/schema.ts), and the fields routers report. */
import { describe, expect, it } from 'vitest';
import { parsePool, parseSubnet } from '../src/model/ipv6-prefix.js';
import { nonCanonicalVniReason } from '../src/model/vni.js';
import {
  EtcdSchema,
  parseIpamEntry,
  parseIpamIndex,
  parseIpamPool,
  parseLiveness,
  parseStatus,
  serializeIpamEntry,
  serializeIpamIndex,
  serializeIpamPool,
  serializeLiveness,
  serializeStatus,
  type ParsedKey,
} from '../src/store/schema.js';

const schema = new EtcdSchema('/v1');
const bytes = (text: string) => Buffer.from(text);

describe('IPAM keys', () => {
  it.each<[string, string, ParsedKey]>([
    [schema.ipamKey(0xff01), '/v1/ipam/ff01', { kind: 'ipam', vni: 0xff01, hex: 'ff01' }],
    [schema.ipamPrefixKey(parseSubnet('2001:db8:100:1::/64')), '/v1/ipam-prefixes/2001:db8:100:1::', { kind: 'ipam-prefix', subnet: '2001:db8:100:1::/64' }],
    [schema.ipamPrefixKey(parseSubnet('2001:db8:100::/64')), '/v1/ipam-prefixes/2001:db8:100::', { kind: 'ipam-prefix', subnet: '2001:db8:100::/64' }],
    [schema.ipamPrefixKey(parseSubnet('fd00:1:2:3::/64')), '/v1/ipam-prefixes/fd00:1:2:3::', { kind: 'ipam-prefix', subnet: 'fd00:1:2:3::/64' }],
    [schema.ipamPoolKey, '/v1/ipam-pool', { kind: 'ipam-pool' }],
  ])('%s is built and parsed back', (built, key, parsed) => {
    expect(built).toBe(key);
    expect(schema.parseKey(key)).toEqual(parsed);
  });

  it('keeps the IPAM directories apart from each other and from the networks', () => {
    expect([schema.ipamDir, schema.ipamPrefixesDir]).toEqual(['/v1/ipam/', '/v1/ipam-prefixes/']);
    expect(schema.ipamPrefixesDir.startsWith(schema.ipamDir)).toBe(false);
    expect(() => schema.ipamPrefixKey(parsePool('2001:db8:100::/48'))).toThrow('IPAM prefixes are /64s, got 2001:db8:100::/48');
  });

  const indexReason = (name: string) =>
    `${JSON.stringify(name)} is not an IPAM index name: the first address of a /64 in RFC 5952 form, e.g. 2001:db8:100:1::`;
  it.each<[string, string]>([
    ['/v1/ipam/FF01', nonCanonicalVniReason('FF01')],
    ['/v1/ipam/0', nonCanonicalVniReason('0')],
    ['/v1/ipam-prefixes/2001:DB8:100:1::', indexReason('2001:DB8:100:1::')],
    ['/v1/ipam-prefixes/2001:db8:100:1:0::', indexReason('2001:db8:100:1:0::')],
    ['/v1/ipam-prefixes/2001:db8:100:1::/64', indexReason('2001:db8:100:1::/64')],
    ['/v1/ipam-prefixes/2001:db8:100:1::1', indexReason('2001:db8:100:1::1')],
    ['/v1/ipam-prefixes/fe80::', indexReason('fe80::')],
    ['/v1/ipam-prefixes/', indexReason('')],
    ['/v1/ipam-pool/x', 'not a key of the data model under /v1/'],
  ])('%s is invalid', (key, reason) => {
    expect(schema.parseKey(key)).toEqual({ kind: 'invalid', reason });
  });
});

describe('IPAM values', () => {
  it('an entry round-trips; prefix and name servers come back in RFC 5952 form; unknown fields are ignored', () => {
    const entry = { prefix: '2001:db8:100:1::/64', dns: ['2001:db8::53'], createdAt: '2026-12-01T00:00:00.000Z' };
    expect(serializeIpamEntry(entry)).toBe('{"prefix":"2001:db8:100:1::/64","dns":["2001:db8::53"],"createdAt":"2026-12-01T00:00:00.000Z"}');
    expect(parseIpamEntry(bytes(serializeIpamEntry(entry)))).toEqual({ ok: true, value: entry });
    expect(parseIpamEntry(bytes('{"prefix":"2001:DB8:100:1:0:0:0:0/64","dns":["2001:0db8::0053"],"createdAt":"2026-12-01T00:00:00Z","later":1}'))).toEqual({
      ok: true,
      value: { prefix: '2001:db8:100:1::/64', dns: ['2001:db8::53'], createdAt: '2026-12-01T00:00:00Z' },
    });
    expect(parseIpamEntry(bytes('{"prefix":"2001:db8:100:1::/64","createdAt":"2026-12-01T00:00:00Z"}'))).toMatchObject({ ok: true, value: { dns: [] } });
  });

  it.each<[string, string]>([
    ['[]', 'value is not a JSON object'],
    ['{"dns":[],"createdAt":"2026-12-01T00:00:00Z"}', 'prefix must be a string, got nothing'],
    ['{"prefix":"2001:db8:100::/48","dns":[],"createdAt":"2026-12-01T00:00:00Z"}', '2001:db8:100::/48 is not a /64: a network\'s prefix is exactly one /64 (SLAAC needs it)'],
    ['{"prefix":"2001:db8:100::1/64","dns":[],"createdAt":"2026-12-01T00:00:00Z"}', '"2001:db8:100::1/64" has host bits set; the prefix is 2001:db8:100::/64'],
    ['{"prefix":"2001:db8:100::/64","dns":"2001:db8::53","createdAt":"2026-12-01T00:00:00Z"}', 'dns must be an array of strings, got "2001:db8::53"'],
    ['{"prefix":"2001:db8:100::/64","dns":["ff02::1"],"createdAt":"2026-12-01T00:00:00Z"}', 'name server ff02::1 is not a unicast address a VM can reach: it overlaps the multicast range ff00::/8'],
    ['{"prefix":"2001:db8:100::/64","dns":[],"createdAt":"yesterday"}', 'createdAt must be an ISO time, got "yesterday"'],
  ])('entry %s is refused', (value, reason) => {
    expect(parseIpamEntry(bytes(value))).toEqual({ ok: false, reason });
  });

  it('the index holds the VNI hex; the pool its prefix', () => {
    expect(serializeIpamIndex(0xff01)).toBe('ff01');
    expect(parseIpamIndex(bytes('ff01'))).toBe(0xff01);
    expect(parseIpamIndex(bytes('FF01'))).toBeUndefined();
    expect(serializeIpamPool({ prefix: '2001:db8:100::/48' })).toBe('{"prefix":"2001:db8:100::/48"}');
    expect(parseIpamPool(bytes('{"prefix":"2001:DB8:100::/48"}'))).toEqual({ ok: true, value: { prefix: '2001:db8:100::/48' } });
    expect(parseIpamPool(bytes('{"prefix":"2001:db8:100::/65"}'))).toEqual({
      ok: false,
      reason: 'pool 2001:db8:100::/65 is longer than /64: it must hold at least one /64 (e.g. 2001:db8:100::/48)',
    });
    expect(parseIpamPool(bytes('{}'))).toEqual({ ok: false, reason: 'prefix must be a string, got nothing' });
  });
});

describe('what routers report', () => {
  const status = { state: 'ready' as const, vxlan: 'vxlan1', bridge: 'br1', mtu: 1430, specRevision: 7, updatedAt: '2026-12-01T00:00:00.000Z' };

  it('a status without ipam is written exactly as before', () => {
    expect(serializeStatus(status)).toBe('{"state":"ready","vxlan":"vxlan1","bridge":"br1","mtu":1430,"specRevision":7,"updatedAt":"2026-12-01T00:00:00.000Z"}');
    expect(parseStatus(bytes(serializeStatus(status)))).toEqual({ ok: true, value: status });
  });

  it('a router\'s status carries the IPAM revision with the prefix it advertises, or why it cannot', () => {
    const advertising = { ...status, ipam: { revision: 42, prefix: '2001:db8:100:1::/64' } };
    expect(serializeStatus(advertising)).toMatch(/,"ipam":\{"revision":42,"prefix":"2001:db8:100:1::\/64"\}\}$/);
    expect(parseStatus(bytes(serializeStatus(advertising)))).toEqual({ ok: true, value: advertising });
    const failing = { ...status, ipam: { revision: 42, reason: 'radvd -c refused the configuration' } };
    expect(parseStatus(bytes(serializeStatus(failing)))).toEqual({ ok: true, value: failing });
    expect(parseStatus(bytes(JSON.stringify({ ...status, ipam: { revision: 42 } })))).toEqual({ ok: false, reason: 'ipam needs a prefix or a reason' });
    expect(parseStatus(bytes(JSON.stringify({ ...status, ipam: { revision: '42', prefix: 'x' } })))).toEqual({ ok: false, reason: 'revision must be an integer, got "42"' });
    expect(parseStatus(bytes(JSON.stringify({ ...status, ipam: 'yes' })))).toEqual({ ok: false, reason: 'ipam must be an object, got "yes"' });
  });

  it('liveness says role router for routers only; other agents write it as before', () => {
    const liveness = { version: '0.1.0', pid: 1, startedAt: '2026-12-01T00:00:00.000Z', underlay: 'u0', ready: true };
    expect(serializeLiveness(liveness)).toBe('{"version":"0.1.0","pid":1,"startedAt":"2026-12-01T00:00:00.000Z","underlay":"u0","ready":true}');
    expect(parseLiveness(bytes(serializeLiveness({ ...liveness, role: 'router' })))).toEqual({ ok: true, value: { ...liveness, role: 'router' } });
    expect(parseLiveness(bytes(JSON.stringify({ ...liveness, role: 1 })))).toEqual({ ok: false, reason: 'role must be a string, got 1' });
  });
});
