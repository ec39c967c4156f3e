/**
 * The netlink core every rtnetlink family shares: message header, attributes
 * (nested), and the kernel's answers (NLMSG_ERROR with its extended
 * acknowledgement, NLMSG_DONE). Pure (no sockets), so it is unit-tested
 * directly; the per-family parts are link-codec.ts, address-codec.ts and
 * neighbour-codec.ts.
 */

export const NLMSG_HDRLEN = 16;

export const NLMSG_ERROR = 2;
export const NLMSG_DONE = 3;

export const NLM_F_REQUEST = 0x1;
export const NLM_F_MULTI = 0x2;
export const NLM_F_ACK = 0x4;
export const NLM_F_ECHO = 0x8;
/** On a dump's messages: the kernel's list changed while it was being dumped, so the dump is inconsistent. */
export const NLM_F_DUMP_INTR = 0x10;
export const NLM_F_DUMP = 0x300;
export const NLM_F_REPLACE = 0x100;
export const NLM_F_EXCL = 0x200;
export const NLM_F_CREATE = 0x400;
export const NLM_F_APPEND = 0x800;
/** On an NLMSG_ERROR: the request it echoes is cut to its header. */
const NLM_F_CAPPED = 0x100;
/** On an NLMSG_ERROR: extended acknowledgement attributes follow the echoed request. */
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;

export const AF_UNSPEC = 0;
export const AF_INET = 2;
export const AF_BRIDGE = 7;
export const AF_INET6 = 10;

const NLA_F_NESTED = 0x8000;
const NLA_TYPE_MASK = 0x3fff;

export const align4 = (n: number) => (n + 3) & ~3;

/** Writes a struct nlmsghdr at `offset`. */
export function writeHeader(out: Buffer, offset: number, length: number, type: number, flags: number, seq: number): void {
  out.writeUInt32LE(length, offset);
  out.writeUInt16LE(type, offset + 4);
  out.writeUInt16LE(flags, offset + 6);
  out.writeUInt32LE(seq, offset + 8);
  out.writeUInt32LE(0, offset + 12);
}

// ---- attributes: encoding ----

export type AttrValue = Buffer | AttrList;
/** Attributes in order; a list value is a nested attribute. */
export type AttrList = Array<[number, AttrValue]>;

/** Bytes the attributes take on the wire, each padded to 4. */
export function attrsLength(attrs: AttrList): number {
  let length = 0;
  for (const [, value] of attrs) length += align4(4 + (Buffer.isBuffer(value) ? value.length : attrsLength(value)));
  return length;
}

/** Writes the attributes at `offset` of a zero-filled buffer sized by attrsLength(); returns the end. */
function writeAttrs(attrs: AttrList, out: Buffer, offset: number): number {
  for (const [type, value] of attrs) {
    const start = offset;
    offset += 4;
    if (Buffer.isBuffer(value)) offset += value.copy(out, offset);
    else offset = writeAttrs(value, out, offset);
    out.writeUInt16LE(offset - start, start);
    out.writeUInt16LE(Buffer.isBuffer(value) ? type : type | NLA_F_NESTED, start + 2);
    offset = align4(offset);
  }
  return offset;
}

/**
 * A family's fixed header (left zeroed for the caller to fill) followed by the attributes, in one
 * allocation: thousands of requests are built per bulk apply.
 */
export function familyMessage(headerBytes: number, attrs: AttrList): Buffer {
  const message = Buffer.alloc(headerBytes + attrsLength(attrs));
  writeAttrs(attrs, message, headerBytes);
  return message;
}

export const u8 = (v: number) => Buffer.from([v]);
export const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
};
export const be16 = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(v);
  return b;
};
export const cstring = (s: string) => Buffer.from(`${s}\0`, 'utf8');

// ---- attributes: decoding ----

/** Calls visit(type, start, end) for each attribute in buf[start, end); stops at a malformed length. */
export function forEachAttr(buf: Buffer, start: number, end: number, visit: (type: number, from: number, to: number) => void): void {
  let offset = start;
  while (offset + 4 <= end) {
    const len = buf.readUInt16LE(offset);
    if (len < 4 || offset + len > end) break;
    visit(buf.readUInt16LE(offset + 2) & NLA_TYPE_MASK, offset + 4, offset + len);
    offset += align4(len);
  }
}

export function readCString(buf: Buffer, from: number, to: number): string {
  const nul = buf.indexOf(0, from);
  return buf.toString('utf8', from, nul === -1 || nul > to ? to : nul);
}

/** A copy: the datagram under a view is shared and short-lived. */
export function copyBytes(buf: Buffer, from: number, to: number): Buffer {
  return Buffer.from(buf.subarray(from, to));
}

// ---- messages and the kernel's answers ----

/**
 * Calls visit() for each message of a datagram, with its payload's bounds; a datagram may hold
 * several. Stops at a malformed length.
 */
export function forEachMessage(
  datagram: Buffer,
  visit: (type: number, flags: number, seq: number, payloadStart: number, payloadEnd: number) => void,
): void {
  for (let offset = 0; offset + NLMSG_HDRLEN <= datagram.length; ) {
    const length = datagram.readUInt32LE(offset);
    if (length < NLMSG_HDRLEN || offset + length > datagram.length) return;
    visit(datagram.readUInt16LE(offset + 4), datagram.readUInt16LE(offset + 6), datagram.readUInt32LE(offset + 8), offset + NLMSG_HDRLEN, offset + length);
    offset += align4(length);
  }
}

/** The errno of an NLMSG_ERROR (0: an acknowledgement) or of an NLMSG_DONE (0: the dump is complete). */
export function answerErrno(datagram: Buffer, payloadStart: number, payloadEnd: number): number {
  return payloadEnd - payloadStart >= 4 ? 0 - datagram.readInt32LE(payloadStart) : 0;
}

/**
 * The kernel's own words about a refusal (NLMSGERR_ATTR_MSG), when the NLMSG_ERROR carries an
 * extended acknowledgement. The kernel adds it only for sockets that set NETLINK_EXT_ACK.
 */
export function extendedAckMessage(datagram: Buffer, flags: number, payloadStart: number, payloadEnd: number): string | undefined {
  if (!(flags & NLM_F_ACK_TLVS)) return undefined;
  // struct nlmsgerr: the errno, then the request (its header alone when capped), then the attributes.
  const echoed = payloadStart + 4;
  if (echoed + NLMSG_HDRLEN > payloadEnd) return undefined;
  const attrsStart = echoed + (flags & NLM_F_CAPPED ? NLMSG_HDRLEN : align4(datagram.readUInt32LE(echoed)));
  let text: string | undefined;
  forEachAttr(datagram, attrsStart, payloadEnd, (type, from, to) => {
    if (type === NLMSGERR_ATTR_MSG) text = readCString(datagram, from, to);
  });
  return text || undefined;
}
