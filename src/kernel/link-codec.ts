/**
 * Lean rtnetlink link codec: builds RTM_*LINK payloads and parses only the
 * attributes vxnetd needs. Pure (no sockets), so it is unit-tested directly.
 */

import { IFF_UP, type BridgeAttributes, type Link, type LinkStats, type VxlanAttributes } from '../model/link.js';
import { AF_INET6, AF_UNSPEC, be16, copyBytes, cstring, familyMessage, forEachAttr, readCString, u32, u8, type AttrList } from './netlink.js';

export const RTM_NEWLINK = 16;
export const RTM_DELLINK = 17;
export const RTM_GETLINK = 18;
export const RTM_SETLINK = 19;

const IFLA_ADDRESS = 1;
const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_MASTER = 10;
const IFLA_OPERSTATE = 16;
const IFLA_LINKINFO = 18;
const IFLA_IFALIAS = 20;
const IFLA_STATS64 = 23;
const IFLA_EXT_MASK = 29;
const IFLA_AF_SPEC = 26;
const IFLA_CARRIER = 33;
const IFLA_CARRIER_CHANGES = 35;

const IFLA_INET6_ADDR_GEN_MODE = 8;

const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;

const IFLA_BR_MCAST_SNOOPING = 23;

const IFLA_VXLAN_ID = 1;
const IFLA_VXLAN_GROUP = 2;
const IFLA_VXLAN_LINK = 3;
const IFLA_VXLAN_LOCAL = 4;
const IFLA_VXLAN_TTL = 5;
const IFLA_VXLAN_LEARNING = 7;
const IFLA_VXLAN_PORT = 15;
const IFLA_VXLAN_GROUP6 = 16;
const IFLA_VXLAN_LOCAL6 = 17;

const RTEXT_FILTER_SKIP_STATS = 1 << 3;

/** An ifinfomsg followed by attributes, in one allocation: thousands are built per bulk apply. */
function linkMessage(index: number, flags: number, change: number, attrs: AttrList): Buffer {
  const message = familyMessage(IFINFOMSG_BYTES, attrs);
  message.writeUInt8(AF_UNSPEC, 0);
  message.writeInt32LE(index, 4);
  message.writeUInt32LE(flags >>> 0, 8);
  message.writeUInt32LE(change >>> 0, 12);
  return message;
}

const IFINFOMSG_BYTES = 16;

export interface NewLinkRequest {
  /** 0 to address the device by name. */
  index?: number;
  name?: string;
  kind?: 'bridge' | 'vxlan';
  mac?: Buffer;
  mtu?: number;
  master?: number;
  alias?: string;
  up?: boolean;
  vxlan?: VxlanAttributes;
  bridge?: BridgeAttributes;
  /** Only on a change: the kernel refuses IFLA_AF_SPEC when it creates a device. */
  addrGenMode?: number;
}

/** Payload of an RTM_NEWLINK (create or change) carrying exactly the given fields. */
export function encodeLinkRequest(req: NewLinkRequest): Buffer {
  const attrs: AttrList = [];
  if (req.name !== undefined) attrs.push([IFLA_IFNAME, cstring(req.name)]);
  if (req.mac) attrs.push([IFLA_ADDRESS, req.mac]);
  if (req.mtu !== undefined) attrs.push([IFLA_MTU, u32(req.mtu)]);
  if (req.master !== undefined) attrs.push([IFLA_MASTER, u32(req.master)]);
  if (req.alias !== undefined) attrs.push([IFLA_IFALIAS, Buffer.from(req.alias, 'utf8')]);
  if (req.addrGenMode !== undefined) attrs.push([IFLA_AF_SPEC, [[AF_INET6, [[IFLA_INET6_ADDR_GEN_MODE, u8(req.addrGenMode)]]]]]);
  if (req.kind) {
    const info: AttrList = [[IFLA_INFO_KIND, cstring(req.kind)]];
    if (req.vxlan) info.push([IFLA_INFO_DATA, encodeVxlan(req.vxlan)]);
    else if (req.bridge) info.push([IFLA_INFO_DATA, encodeBridge(req.bridge)]);
    attrs.push([IFLA_LINKINFO, info]);
  }
  const flags = req.up === undefined ? 0 : req.up ? IFF_UP : 0;
  const change = req.up === undefined ? 0 : IFF_UP;
  return linkMessage(req.index ?? 0, flags, change, attrs);
}

function encodeBridge(b: BridgeAttributes): AttrList {
  const attrs: AttrList = [];
  if (b.multicastSnooping !== undefined) attrs.push([IFLA_BR_MCAST_SNOOPING, u8(b.multicastSnooping ? 1 : 0)]);
  return attrs;
}

function encodeVxlan(v: VxlanAttributes): AttrList {
  const attrs: AttrList = [];
  if (v.id !== undefined) attrs.push([IFLA_VXLAN_ID, u32(v.id)]);
  if (v.group) attrs.push([v.group.length === 16 ? IFLA_VXLAN_GROUP6 : IFLA_VXLAN_GROUP, v.group]);
  if (v.local) attrs.push([v.local.length === 16 ? IFLA_VXLAN_LOCAL6 : IFLA_VXLAN_LOCAL, v.local]);
  if (v.link !== undefined) attrs.push([IFLA_VXLAN_LINK, u32(v.link)]);
  if (v.ttl !== undefined) attrs.push([IFLA_VXLAN_TTL, u8(v.ttl)]);
  if (v.learning !== undefined) attrs.push([IFLA_VXLAN_LEARNING, u8(v.learning ? 1 : 0)]);
  if (v.port !== undefined) attrs.push([IFLA_VXLAN_PORT, be16(v.port)]);
  return attrs;
}

/** RTM_GETLINK payload; stats are skipped unless asked for, which halves a dump. */
export function encodeGetLink(opts: { name?: string; index?: number; withStats?: boolean }): Buffer {
  const attrs: AttrList = [[IFLA_EXT_MASK, u32(opts.withStats ? 0 : RTEXT_FILTER_SKIP_STATS)]];
  if (opts.name !== undefined) attrs.push([IFLA_IFNAME, cstring(opts.name)]);
  return linkMessage(opts.index ?? 0, 0, 0, attrs);
}

export function encodeDelLink(index: number): Buffer {
  return linkMessage(index, 0, 0, []);
}

// ---- decoding ----

/** The family byte of an RTM_*LINK payload (AF_BRIDGE events must be ignored). */
export function linkFamily(payload: Buffer): number {
  return payload.readUInt8(0);
}

/** The ifindex of a link message, without decoding its attributes (a create's echo). */
export function linkIndex(payload: Buffer): number {
  return payload.readInt32LE(4);
}

export function decodeLink(payload: Buffer, opts: { stats?: boolean } = {}): Link {
  const link: Link = {
    index: linkIndex(payload),
    flags: payload.readUInt32LE(8),
    name: '',
    mtu: 0,
  };
  forEachAttr(payload, 16, payload.length, (type, from, to) => {
    switch (type) {
      case IFLA_IFNAME:
        link.name = readCString(payload, from, to);
        break;
      case IFLA_MTU:
        link.mtu = payload.readUInt32LE(from);
        break;
      case IFLA_MASTER:
        link.master = payload.readUInt32LE(from);
        break;
      case IFLA_ADDRESS:
        link.mac = copyBytes(payload, from, to);
        break;
      case IFLA_IFALIAS:
        link.alias = readCString(payload, from, to);
        break;
      case IFLA_OPERSTATE:
        link.operstate = payload.readUInt8(from);
        break;
      case IFLA_CARRIER:
        link.carrier = payload.readUInt8(from);
        break;
      case IFLA_CARRIER_CHANGES:
        link.carrierChanges = payload.readUInt32LE(from);
        break;
      case IFLA_STATS64:
        if (opts.stats && to - from >= 64) link.stats = decodeStats64(payload, from);
        break;
      case IFLA_LINKINFO:
        decodeLinkInfo(payload, from, to, link);
        break;
      case IFLA_AF_SPEC:
        forEachAttr(payload, from, to, (family, start, end) => {
          if (family !== AF_INET6) return;
          forEachAttr(payload, start, end, (attr, at) => {
            if (attr === IFLA_INET6_ADDR_GEN_MODE) link.addrGenMode = payload.readUInt8(at);
          });
        });
        break;
    }
  });
  return link;
}

function decodeLinkInfo(buf: Buffer, start: number, end: number, link: Link): void {
  let data: [number, number] | undefined;
  forEachAttr(buf, start, end, (type, from, to) => {
    if (type === IFLA_INFO_KIND) link.kind = readCString(buf, from, to);
    else if (type === IFLA_INFO_DATA) data = [from, to];
  });
  if (link.kind === 'vxlan' && data) link.vxlan = decodeVxlan(buf, data[0], data[1]);
}

function decodeVxlan(buf: Buffer, start: number, end: number): VxlanAttributes {
  const v: VxlanAttributes = {};
  forEachAttr(buf, start, end, (type, from, to) => {
    switch (type) {
      case IFLA_VXLAN_ID:
        v.id = buf.readUInt32LE(from);
        break;
      case IFLA_VXLAN_GROUP:
      case IFLA_VXLAN_GROUP6: {
        const group = copyBytes(buf, from, to);
        // The kernel reports an unset group as all zeros.
        if (group.some((b) => b !== 0)) v.group = group;
        break;
      }
      case IFLA_VXLAN_LOCAL:
      case IFLA_VXLAN_LOCAL6: {
        const local = copyBytes(buf, from, to);
        if (local.some((b) => b !== 0)) v.local = local;
        break;
      }
      case IFLA_VXLAN_LINK:
        v.link = buf.readUInt32LE(from);
        break;
      case IFLA_VXLAN_TTL:
        v.ttl = buf.readUInt8(from);
        break;
      case IFLA_VXLAN_LEARNING:
        v.learning = buf.readUInt8(from) !== 0;
        break;
      case IFLA_VXLAN_PORT:
        v.port = buf.readUInt16BE(from);
        break;
    }
  });
  return v;
}

function decodeStats64(buf: Buffer, at: number): LinkStats {
  const field = (i: number) => Number(buf.readBigUInt64LE(at + i * 8));
  return {
    rxPackets: field(0),
    txPackets: field(1),
    rxBytes: field(2),
    txBytes: field(3),
    rxErrors: field(4),
    txErrors: field(5),
    rxDropped: field(6),
    txDropped: field(7),
  };
}
