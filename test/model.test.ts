import { Address6 } from 'ip-address';
import { describe, expect, it } from 'vitest';
import { formatAddress, groupFor, parseGroupBase, reservedGroupReason } from '../src/model/group.js';
import { deterministicMac, formatMac } from '../src/model/mac.js';
import { desiredNetwork } from '../src/model/network.js';
import { parseNetworkSpec, SpecError } from '../src/model/spec.js';
import { bridgeName, parseVniHex, vniHex, vxlanName } from '../src/model/vni.js';
import { hexFromOwnerAlias, identityText, MAX_ALIAS_BYTES, ownerAlias, parseOwnerAlias } from '../src/model/identity.js';
import { HOST, IDENTITY, UNDERLAY } from './support/fixtures.js';

const OWNER = { identity: IDENTITY, incarnation: 1 };

const base6 = parseGroupBase('ff05::');

describe('VNI names and groups', () => {
  it.each([
    [1, '1', 'vxlan1', 'br1', 'ff05::1'],
    [100, '64', 'vxlan64', 'br64', 'ff05::64'],
    [0xff01, 'ff01', 'vxlanff01', 'brff01', 'ff05::ff01'],
    [0xffffff, 'ffffff', 'vxlanffffff', 'brffffff', 'ff05::ff:ffff'],
  ])('VNI %i → %s, %s, %s, group %s', (vni, hex, vx, br, group) => {
    expect(vniHex(vni)).toBe(hex);
    expect(parseVniHex(hex)).toBe(vni);
    expect(vxlanName(hex)).toBe(vx);
    expect(bridgeName(hex)).toBe(br);
    expect(vxlanName(hex).length).toBeLessThanOrEqual(15);
    expect(groupFor(base6, vni).text).toBe(group);
  });

  it.each(['FF01', '0ff01', 'ff01 ', ' ff01', 'g1', '1000000', '0', '', 'ff/01', '-1', '1e3x'])('refuses non-canonical key %j', (key) => {
    expect(parseVniHex(key)).toBeUndefined();
  });

  it('refuses VNI 0 and 2^24', () => {
    expect(() => vniHex(0)).toThrow(RangeError);
    expect(() => vniHex(0x1000000)).toThrow(RangeError);
  });

  it('recognises only canonical owner aliases', () => {
    expect(hexFromOwnerAlias('vxnetd:ff01')).toBe('ff01');
    expect(hexFromOwnerAlias('vxnetd:ff01 host=hv1 etcd=cdf818194e3a8c32 prefix=/v1 net=17')).toBe('ff01');
    expect(hexFromOwnerAlias('vxnetd:FF01')).toBeUndefined();
    expect(hexFromOwnerAlias('vxnetd:ff01 host=hv1')).toBeUndefined();
    expect(hexFromOwnerAlias('vxnetd:ff01 net=17')).toBeUndefined();
    expect(hexFromOwnerAlias('something')).toBeUndefined();
    expect(hexFromOwnerAlias(undefined)).toBeUndefined();
  });

  it('an alias records the identity (host, etcd cluster, prefix) and the incarnation, and reads back', () => {
    const identity = identityText({ host: 'hv042', etcdCluster: 'cdf818194e3a8c32', prefix: '/v1' });
    expect(identity).toBe('host=hv042 etcd=cdf818194e3a8c32 prefix=/v1');
    const alias = ownerAlias('ff01', identity, 17);
    expect(alias).toBe('vxnetd:ff01 host=hv042 etcd=cdf818194e3a8c32 prefix=/v1 net=17');
    expect(parseOwnerAlias(alias)).toEqual({ hex: 'ff01', identity, incarnation: 17 });
    expect(parseOwnerAlias('vxnetd:ff01')).toEqual({ hex: 'ff01' });
  });

  it('a prefix an alias cannot show plainly is hashed, and a too long identity wholly; every alias fits IFALIASZ', () => {
    expect(identityText({ host: 'h', etcdCluster: '0000000000000001', prefix: '/my cloud' })).toMatch(/^host=h etcd=0000000000000001 prefix=#[0-9a-f]{16}$/);
    expect(identityText({ host: 'h', etcdCluster: '0000000000000001', prefix: '/"q"' })).toMatch(/prefix=#[0-9a-f]{16}$/);
    const long = identityText({ host: 'a'.repeat(63) + '.' + 'b'.repeat(63) + '.' + 'c'.repeat(63), etcdCluster: 'ffffffffffffffff', prefix: '/' + 'p'.repeat(63) });
    expect(long).toMatch(/^id=[0-9a-f]{16}$/);
    const longest = ownerAlias('ffffff', identityText({ host: 'a'.repeat(150), etcdCluster: 'ffffffffffffffff', prefix: '/' + 'p'.repeat(63) }), 2 ** 63);
    expect(Buffer.byteLength(longest)).toBeLessThanOrEqual(MAX_ALIAS_BYTES);
    expect(parseOwnerAlias(longest)?.hex).toBe('ffffff');
  });

  it.each([
    [2, 'all-routers'],
    [0xfb, 'mDNSv6'],
    [0x101, 'NTP'],
    [0x1_0003, 'DHCP'],
    [0x2_7ffe, 'SAP'],
  ])('VNI %i lands on a reserved group (%s)', (vni, what) => {
    expect(reservedGroupReason(groupFor(base6, vni))).toMatch(new RegExp(what));
  });

  it.each([1, 3, 100, 0xff01, 0xffffff])('VNI %i is usable', (vni) => {
    expect(reservedGroupReason(groupFor(base6, vni))).toBeUndefined();
  });

  it('IPv4 bases: 239.0.0.0 + VNI, SSDP refused', () => {
    const base4 = parseGroupBase('239.0.0.0');
    expect(groupFor(base4, 0xff01).text).toBe('239.0.255.1');
    expect(reservedGroupReason(groupFor(base4, 0xfffffa))).toMatch(/SSDP/);
  });

  it.each(['2001:db8::', 'ff05::1', 'ff05::/64', '10.0.0.0', '239.0.0.1', 'nonsense', 'ff05::%eth0'])('bad group base %j is refused', (text) => {
    expect(() => parseGroupBase(text)).toThrow();
  });
});

describe('deterministic MAC', () => {
  it('is stable, locally administered and unicast, and differs by host, kind and VNI', () => {
    const mac = deterministicMac('hv1', 'bridge', 100);
    expect(deterministicMac('hv1', 'bridge', 100).equals(mac)).toBe(true);
    expect(mac[0]! & 0x02).toBe(0x02);
    expect(mac[0]! & 0x01).toBe(0);
    expect(formatMac(mac)).toMatch(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    const others = [deterministicMac('hv2', 'bridge', 100), deterministicMac('hv1', 'vxlan', 100), deterministicMac('hv1', 'bridge', 101)];
    for (const other of others) expect(other.equals(mac)).toBe(false);
  });
});

describe('spec validation', () => {
  const parse = (text: string) => parseNetworkSpec(Buffer.from(text));
  const errorOf = (text: string) => {
    const result = parse(text);
    if (result.ok) throw new Error(`expected an error for ${text}`);
    return result.error;
  };

  it('accepts the empty object and every documented field; ignores unknown ones', () => {
    expect(parse('{}')).toEqual({ ok: true, spec: { type: 'vxlan' } });
    expect(parse('{"type":"vxlan","mtu":1400,"owner":"customer-42","description":"d","future":[1]}')).toEqual({
      ok: true,
      spec: { type: 'vxlan', mtu: 1400, owner: 'customer-42', description: 'd' },
    });
  });

  it.each([
    ['{not json', 'invalid_json', /not valid JSON/],
    ['[1,2]', 'not_object', /must be a JSON object, got an array/],
    ['null', 'not_object', /got null/],
    ['"vxlan"', 'not_object', /got a string/],
    ['42', 'not_object', /got a number/],
    ['{"type":"geneve"}', 'unknown_type', /"geneve" is not supported/],
    ['{"type":7}', 'wrong_type', /type must be a string/],
    ['{"mtu":"1400"}', 'wrong_type', /mtu must be an integer, got "1400"/],
    ['{"mtu":1400.5}', 'wrong_type', /mtu must be an integer/],
    ['{"mtu":67}', 'mtu_out_of_range', /mtu 67 is outside 68…65535/],
    ['{"mtu":65536}', 'mtu_out_of_range', /outside/],
    ['{"owner":42}', 'wrong_type', /owner must be a string/],
    [`{"description":"${'x'.repeat(257)}"}`, 'field_too_long', /description is 257 characters, the limit is 256/],
  ])('%s → %s', (text, code, message) => {
    const error = errorOf(text);
    expect(error).toBeInstanceOf(SpecError);
    expect(error.code).toBe(code);
    expect(error.message).toMatch(message);
  });

  it('refuses values over 64 KiB before parsing them', () => {
    const error = errorOf(`{"description":"${'x'.repeat(70_000)}"}`);
    expect(error.code).toBe('too_large');
  });

  it('mtu above the underlay limit names the underlay and its limit', () => {
    expect(() => desiredNetwork(100, { type: 'vxlan', mtu: 9000 }, HOST, UNDERLAY, OWNER)).toThrow('mtu 9000 exceeds underlay u0 limit 1430');
    expect(desiredNetwork(100, { type: 'vxlan', mtu: 1430 }, HOST, UNDERLAY, OWNER).bridge.mtu).toBe(1430);
  });

  it('mtu defaults to the underlay MTU minus 70 over IPv6, 50 over IPv4', () => {
    expect(desiredNetwork(100, { type: 'vxlan' }, HOST, UNDERLAY, OWNER).vxlan.mtu).toBe(1430);
    const v4 = { ...HOST, groupBase: parseGroupBase('239.0.0.0') };
    expect(desiredNetwork(100, { type: 'vxlan' }, v4, UNDERLAY, OWNER).vxlan.mtu).toBe(1450);
  });

  it('a reserved group is a spec error with the group named', () => {
    expect(() => desiredNetwork(0xfb, { type: 'vxlan' }, HOST, UNDERLAY, OWNER)).toThrow(/VNI fb maps to multicast group ff05::fb, which is reserved \(mDNSv6\)/);
  });
});

describe('formatAddress', () => {
  const v6 = (...groups: number[]) => Buffer.from(groups.flatMap((g) => [g >> 8, g & 0xff]));
  it.each([
    [v6(0xff05, 0, 0, 0, 0, 0, 0x10, 1), 'ff05::10:1'],
    [v6(0, 0, 0, 0, 0, 0, 0, 0), '::'],
    [v6(0, 0, 0, 0, 0, 0, 0, 1), '::1'],
    [v6(0x2001, 0xdb8, 0, 0, 1, 0, 0, 1), '2001:db8::1:0:0:1'],
    [v6(0x2001, 0xdb8, 0, 1, 1, 1, 1, 1), '2001:db8:0:1:1:1:1:1'],
    [v6(0x2001, 0, 0, 1, 0, 0, 0, 1), '2001:0:0:1::1'],
    [v6(0xfd00, 0, 0, 0, 0, 0, 0, 0), 'fd00::'],
    [Buffer.from([239, 0, 255, 1]), '239.0.255.1'],
  ])('formats %o as %s (RFC 5952)', (bytes, text) => {
    expect(formatAddress(bytes)).toBe(text);
  });

  it('agrees with ip-address on 20,000 zero-heavy addresses', () => {
    let seed = 42;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let k = 0; k < 20_000; k++) {
      const groups = Array.from({ length: 8 }, () => (random() < 0.5 ? 0 : random() < 0.2 ? 1 : Math.floor(random() * 65536)));
      const bytes = v6(...groups);
      const value = groups.reduce((acc, g) => (acc << 16n) | BigInt(g), 0n);
      expect(formatAddress(bytes)).toBe(Address6.fromBigInt(value).correctForm());
    }
  });
});
