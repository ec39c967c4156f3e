/** The rtnetlink address and neighbour codecs (src/kernel/address-codec.ts, neighbour-codec.ts): their bytes, and decoding them back. */
import { describe, expect, it } from 'vitest';
import { decodeAddress, encodeAddress, encodeGetAddresses } from '../src/kernel/address-codec.js';
import { AF_BRIDGE, AF_INET6 } from '../src/kernel/netlink.js';
import { decodeNeighbour, encodeGetNeighbours, encodeNeighbour } from '../src/kernel/neighbour-codec.js';
import { IFA_F_NODAD, IFA_F_PERMANENT } from '../src/model/address.js';
import { NTF_SELF, NUD_PERMANENT } from '../src/model/neighbour.js';
import { attr, u32 } from './support/netlink-bytes.js';

const fd00_1 = Buffer.from('fd000000000000000000000000000001', 'hex');
const fd00_2 = Buffer.from('fd000000000000000000000000000002', 'hex');

describe('address codec', () => {
  it('encodes struct ifaddrmsg, then IFA_LOCAL, IFA_ADDRESS and IFA_FLAGS (and IFA_CACHEINFO when lifetimes are given)', () => {
    const payload = encodeAddress({ family: AF_INET6, index: 7, prefixLength: 64, address: fd00_1, flags: IFA_F_NODAD | 0x100, scope: 0 });
    // family 10, prefix 64, the flags' low 8 bits, scope 0, ifindex 7
    expect(payload.subarray(0, 8).toString('hex')).toBe('0a40020007000000');
    expect(payload.subarray(8).equals(Buffer.concat([attr(2, fd00_1), attr(1, fd00_1), attr(8, u32(0x102))]))).toBe(true);
    const timed = encodeAddress({ family: AF_INET6, index: 7, prefixLength: 64, address: fd00_1, flags: 0, scope: 0, validLifetime: 600, preferredLifetime: 300 });
    expect(timed.subarray(8 + 20 + 20 + 8).equals(attr(6, Buffer.concat([u32(300), u32(600), u32(0), u32(0)])))).toBe(true);
  });

  it('decodes what it encodes, IFA_FLAGS over the header byte, lifetimes from IFA_CACHEINFO', () => {
    const payload = encodeAddress({ family: AF_INET6, index: 7, prefixLength: 64, address: fd00_1, flags: IFA_F_PERMANENT | 0x200, scope: 253, validLifetime: 0xffffffff });
    expect(decodeAddress(payload)).toEqual({
      family: AF_INET6,
      index: 7,
      prefixLength: 64,
      address: fd00_1,
      local: fd00_1,
      flags: IFA_F_PERMANENT | 0x200,
      scope: 253,
      validLifetime: 0xffffffff,
      preferredLifetime: 0xffffffff,
    });
  });

  it('asks for a dump with an empty ifaddrmsg of the family', () => {
    expect(encodeGetAddresses(AF_INET6).toString('hex')).toBe('0a00000000000000');
  });
});

describe('neighbour codec', () => {
  it('encodes an all-zeros forwarding entry of a vxlan: struct ndmsg (AF_BRIDGE, NUD_PERMANENT, NTF_SELF), NDA_LLADDR, NDA_DST', () => {
    const payload = encodeNeighbour({ family: AF_BRIDGE, index: 9, state: NUD_PERMANENT, flags: NTF_SELF, mac: Buffer.alloc(6), destination: fd00_2 });
    // family 7, padding, ifindex 9, state 0x80, flags 0x02, type 0
    expect(payload.subarray(0, 12).toString('hex')).toBe('070000000900000080000200');
    expect(payload.subarray(12).equals(Buffer.concat([attr(2, Buffer.alloc(6)), attr(1, fd00_2)]))).toBe(true);
  });

  it('decodes what it encodes', () => {
    const entry = { family: AF_BRIDGE, index: 9, state: NUD_PERMANENT, flags: NTF_SELF, mac: Buffer.from('020000000001', 'hex'), destination: fd00_2 };
    expect(decodeNeighbour(encodeNeighbour(entry))).toEqual(entry);
  });

  it("asks for a dump with an ndmsg of the family and, to filter, the device's ifindex", () => {
    expect(encodeGetNeighbours(AF_BRIDGE).toString('hex')).toBe('070000000000000000000000');
    // Padded to a struct ifinfomsg, the only header size the kernel filters a forwarding-table dump by.
    expect(encodeGetNeighbours(AF_BRIDGE, 9).toString('hex')).toBe('07000000090000000000000000000000');
  });
});
