/**
 * rtnetlink neighbour codec: RTM_*NEIGH payloads (struct ndmsg and the
 * attributes vxnetd needs), for a vxlan's forwarding entries (AF_BRIDGE) in
 * particular. Pure (no sockets), so it is unit-tested directly.
 */
import type { Neighbour } from '../model/neighbour.js';
import { copyBytes, familyMessage, forEachAttr, type AttrList } from './netlink.js';

export const RTM_NEWNEIGH = 28;
export const RTM_DELNEIGH = 29;
export const RTM_GETNEIGH = 30;

const NDA_DST = 1;
const NDA_LLADDR = 2;

const NDMSG_BYTES = 12;

/** struct ndmsg followed by the attributes. */
function neighbourMessage(family: number, index: number, state: number, flags: number, attrs: AttrList): Buffer {
  const message = familyMessage(NDMSG_BYTES, attrs);
  message.writeUInt8(family, 0);
  message.writeInt32LE(index, 4);
  message.writeUInt16LE(state, 8);
  message.writeUInt8(flags, 10);
  return message;
}

/**
 * Payload of an RTM_NEWNEIGH or RTM_DELNEIGH. Several all-zeros entries of one vxlan (one per remote)
 * need NLM_F_APPEND on the RTM_NEWNEIGH, as `bridge fdb append` sends.
 */
export function encodeNeighbour(neighbour: Pick<Neighbour, 'family' | 'index' | 'state' | 'flags' | 'mac' | 'destination'>): Buffer {
  const attrs: AttrList = [];
  if (neighbour.mac) attrs.push([NDA_LLADDR, neighbour.mac]);
  if (neighbour.destination) attrs.push([NDA_DST, neighbour.destination]);
  return neighbourMessage(neighbour.family, neighbour.index, neighbour.state, neighbour.flags, attrs);
}

/**
 * RTM_GETNEIGH dump payload: every entry of the family, or (AF_BRIDGE) only those of one device.
 * Without NETLINK_GET_STRICT_CHK (the binding cannot set it) the kernel filters a forwarding-table
 * dump by device only when the header has the size of a struct ifinfomsg (16 bytes), whose
 * ifi_index sits where ndmsg's ndm_ifindex does: the 12-byte ndmsg is padded to that size.
 */
export function encodeGetNeighbours(family: number, index = 0): Buffer {
  const message = neighbourMessage(family, index, 0, 0, []);
  return index === 0 ? message : Buffer.concat([message, Buffer.alloc(IFINFOMSG_BYTES - NDMSG_BYTES)]);
}

const IFINFOMSG_BYTES = 16;

/** The all-zeros MAC: a vxlan floods broadcast and unknown traffic to every such entry's destination. */
export const FLOOD_MAC = Buffer.alloc(6);

export function decodeNeighbour(payload: Buffer): Neighbour {
  const neighbour: Neighbour = {
    family: payload.readUInt8(0),
    index: payload.readInt32LE(4),
    state: payload.readUInt16LE(8),
    flags: payload.readUInt8(10),
  };
  forEachAttr(payload, NDMSG_BYTES, payload.length, (type, from, to) => {
    if (type === NDA_LLADDR) neighbour.mac = copyBytes(payload, from, to);
    else if (type === NDA_DST) neighbour.destination = copyBytes(payload, from, to);
  });
  return neighbour;
}
