/**
 * rtnetlink address codec: RTM_*ADDR payloads (struct ifaddrmsg and the
 * attributes vxnetd needs). Pure (no sockets), so it is unit-tested directly.
 */
import type { Address } from '../model/address.js';
import { copyBytes, familyMessage, forEachAttr, u32, u8, type AttrList } from './netlink.js';

export const RTM_NEWADDR = 20;
export const RTM_DELADDR = 21;
export const RTM_GETADDR = 22;

const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFA_CACHEINFO = 6;
const IFA_FLAGS = 8;
const IFA_PROTO = 11;

const IFADDRMSG_BYTES = 8;
const FOREVER = 0xffffffff;

/** struct ifaddrmsg followed by the attributes. */
function addressMessage(family: number, prefixLength: number, flags: number, scope: number, index: number, attrs: AttrList): Buffer {
  const message = familyMessage(IFADDRMSG_BYTES, attrs);
  message.writeUInt8(family, 0);
  message.writeUInt8(prefixLength, 1);
  message.writeUInt8(flags & 0xff, 2);
  message.writeUInt8(scope, 3);
  message.writeUInt32LE(index, 4);
  return message;
}

/**
 * Payload of an RTM_NEWADDR or RTM_DELADDR. IFA_LOCAL and IFA_ADDRESS both carry the address (the
 * kernel takes IFA_LOCAL as the device's own); IFA_FLAGS carries flags beyond the header's 8 bits.
 */
export function encodeAddress(
  address: Pick<Address, 'family' | 'index' | 'prefixLength' | 'address' | 'flags' | 'scope'> & { local?: Buffer; validLifetime?: number; preferredLifetime?: number; protocol?: number },
): Buffer {
  const attrs: AttrList = [
    [IFA_LOCAL, address.local ?? address.address],
    [IFA_ADDRESS, address.address],
    [IFA_FLAGS, u32(address.flags)],
  ];
  if (address.protocol !== undefined) attrs.push([IFA_PROTO, u8(address.protocol)]);
  if (address.validLifetime !== undefined || address.preferredLifetime !== undefined) {
    const cacheinfo = Buffer.alloc(16);
    cacheinfo.writeUInt32LE(address.preferredLifetime ?? FOREVER, 0);
    cacheinfo.writeUInt32LE(address.validLifetime ?? FOREVER, 4);
    attrs.push([IFA_CACHEINFO, cacheinfo]);
  }
  return addressMessage(address.family, address.prefixLength, address.flags, address.scope, address.index, attrs);
}

/** RTM_GETADDR dump payload: every address of the family (0: all families). */
export function encodeGetAddresses(family: number): Buffer {
  return addressMessage(family, 0, 0, 0, 0, []);
}

export function decodeAddress(payload: Buffer): Address {
  const address: Address = {
    family: payload.readUInt8(0),
    prefixLength: payload.readUInt8(1),
    flags: payload.readUInt8(2),
    scope: payload.readUInt8(3),
    index: payload.readUInt32LE(4),
    address: Buffer.alloc(0),
  };
  forEachAttr(payload, IFADDRMSG_BYTES, payload.length, (type, from, to) => {
    switch (type) {
      case IFA_ADDRESS:
        address.address = copyBytes(payload, from, to);
        break;
      case IFA_LOCAL:
        address.local = copyBytes(payload, from, to);
        break;
      case IFA_FLAGS:
        address.flags = payload.readUInt32LE(from);
        break;
      case IFA_PROTO:
        address.protocol = payload.readUInt8(from);
        break;
      case IFA_CACHEINFO:
        if (to - from < 8) break;
        address.preferredLifetime = payload.readUInt32LE(from);
        address.validLifetime = payload.readUInt32LE(from + 4);
        break;
    }
  });
  // An IPv4 device address comes as IFA_LOCAL alone on some paths.
  if (address.address.length === 0 && address.local) address.address = address.local;
  return address;
}
