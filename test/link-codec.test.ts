/** The rtnetlink link codec: IPv6 address generation mode (IFLA_AF_SPEC → AF_INET6 → IFLA_INET6_ADDR_GEN_MODE) and bridge attributes. */
import { describe, expect, it } from 'vitest';
import { IN6_ADDR_GEN_MODE_NONE } from '../src/model/link.js';
import { decodeLink, encodeLinkRequest } from '../src/kernel/link-codec.js';
import { attr, u32 } from './support/netlink-bytes.js';

const NESTED = 0x8000;

describe('codec: IPv6 address generation mode', () => {
  it('encodes the mode nested under IFLA_AF_SPEC / AF_INET6, and only when asked', () => {
    const request = encodeLinkRequest({ name: 'br64', addrGenMode: IN6_ADDR_GEN_MODE_NONE });
    const afSpec = attr(26 | NESTED, attr(10 | NESTED, attr(8, Buffer.from([1]))));
    expect(request.subarray(16 + 12).equals(afSpec)).toBe(true); // after the ifinfomsg and IFLA_IFNAME "br64\0" (9 bytes, padded)
    expect(decodeLink(request)).toMatchObject({ name: 'br64', addrGenMode: IN6_ADDR_GEN_MODE_NONE });
    expect(encodeLinkRequest({ name: 'br64' }).length).toBe(16 + 12);
  });

  it("decodes the mode from a dump's AF_SPEC past the AF_INET block and other IPv6 attributes; absent without AF_INET6", () => {
    const ifinfo = Buffer.alloc(16);
    ifinfo.writeInt32LE(7, 4);
    const inet = attr(2 | NESTED, attr(1, Buffer.alloc(8)));
    const inet6 = attr(10 | NESTED, Buffer.concat([attr(1, u32(0x80000000)), attr(8, Buffer.from([0]))]));
    const withIpv6 = Buffer.concat([ifinfo, attr(3, Buffer.from('vxlan64\0')), attr(26 | NESTED, Buffer.concat([inet, inet6]))]);
    expect(decodeLink(withIpv6)).toMatchObject({ index: 7, name: 'vxlan64', addrGenMode: 0 });
    const withoutIpv6 = Buffer.concat([ifinfo, attr(3, Buffer.from('vxlan64\0')), attr(26 | NESTED, inet)]);
    expect(decodeLink(withoutIpv6).addrGenMode).toBeUndefined();
  });
});

describe('codec: bridge attributes', () => {
  it('puts multicast snooping under IFLA_LINKINFO / IFLA_INFO_DATA as IFLA_BR_MCAST_SNOOPING (u8), after the kind', () => {
    const request = encodeLinkRequest({ name: 'br64', kind: 'bridge', bridge: { multicastSnooping: false } });
    const linkinfo = attr(18 | NESTED, Buffer.concat([attr(1, Buffer.from('bridge\0')), attr(2 | NESTED, attr(23, Buffer.from([0])))]));
    expect(request.subarray(16 + 12).equals(linkinfo)).toBe(true);
    const on = encodeLinkRequest({ name: 'br64', kind: 'bridge', bridge: { multicastSnooping: true } });
    expect(on.subarray(16 + 12).equals(attr(18 | NESTED, Buffer.concat([attr(1, Buffer.from('bridge\0')), attr(2 | NESTED, attr(23, Buffer.from([1])))])))).toBe(true);
    expect(encodeLinkRequest({ name: 'br64', kind: 'bridge' }).subarray(16 + 12).equals(attr(18 | NESTED, attr(1, Buffer.from('bridge\0'))))).toBe(true);
  });
});
