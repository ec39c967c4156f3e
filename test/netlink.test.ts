/** The netlink core (src/kernel/netlink.ts): messages in a datagram, attributes, and the kernel's answers with their extended acknowledgement. */
import { describe, expect, it } from 'vitest';
import {
  NLMSG_DONE,
  NLMSG_ERROR,
  NLM_F_MULTI,
  answerErrno,
  extendedAckMessage,
  familyMessage,
  forEachAttr,
  forEachMessage,
  writeHeader,
} from '../src/kernel/netlink.js';
import { attr } from './support/netlink-bytes.js';

function message(type: number, flags: number, seq: number, payload: Buffer): Buffer {
  const out = Buffer.alloc((16 + payload.length + 3) & ~3);
  writeHeader(out, 0, 16 + payload.length, type, flags, seq);
  payload.copy(out, 16);
  return out;
}
const errno = (code: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(-code);
  return b;
};
const NLM_F_CAPPED = 0x100;
const NLM_F_ACK_TLVS = 0x200;
const NLMSGERR_ATTR_MSG = 1;
const NLMSGERR_ATTR_OFFS = 2;

describe('netlink core', () => {
  it('walks every message of a datagram with its header fields and payload bounds, and stops at a malformed length', () => {
    const datagram = Buffer.concat([message(16, NLM_F_MULTI, 7, Buffer.from('abcde')), message(NLMSG_DONE, NLM_F_MULTI, 7, errno(0))]);
    const seen: unknown[] = [];
    const visit = (type: number, flags: number, seq: number, start: number, end: number) => seen.push([type, flags, seq, datagram.toString('latin1', start, end)]);
    forEachMessage(datagram, visit);
    expect(seen).toEqual([
      [16, NLM_F_MULTI, 7, 'abcde'],
      [NLMSG_DONE, NLM_F_MULTI, 7, '\0\0\0\0'],
    ]);
    seen.length = 0;
    datagram.writeUInt32LE(datagram.length, 24); // the second message claims more than is there
    forEachMessage(datagram, visit);
    expect(seen).toHaveLength(1);
  });

  it("encodes nested attributes after a family's fixed header, which walking reads back", () => {
    const out = familyMessage(8, [
      [3, Buffer.from('br64\0')],
      [18, [[1, Buffer.from('bridge\0')]]],
    ]);
    expect(out.subarray(0, 8).equals(Buffer.alloc(8))).toBe(true);
    expect(out.subarray(8).equals(Buffer.concat([attr(3, Buffer.from('br64\0')), attr(18 | 0x8000, attr(1, Buffer.from('bridge\0')))]))).toBe(true);
    const types: number[] = [];
    forEachAttr(out, 8, out.length, (type) => types.push(type));
    expect(types).toEqual([3, 18]); // the nested flag is masked off
  });

  it("reads the errno of an NLMSG_ERROR and of an NLMSG_DONE (0 for an acknowledgement or a complete dump)", () => {
    const refused = message(NLMSG_ERROR, 0, 1, errno(17));
    expect(answerErrno(refused, 16, refused.length)).toBe(17);
    const done = message(NLMSG_DONE, NLM_F_MULTI, 1, errno(0));
    expect(answerErrno(done, 16, done.length)).toBe(0);
    expect(answerErrno(done, 16, 16)).toBe(0); // a DONE without a payload
  });

  it("takes the kernel's message from an extended acknowledgement, past the echoed request or its capped header", () => {
    const request = message(16, 0x405, 9, Buffer.alloc(21)); // 37 bytes, padded to 40
    const tlvs = Buffer.concat([attr(NLMSGERR_ATTR_OFFS, Buffer.alloc(4)), attr(NLMSGERR_ATTR_MSG, Buffer.from('Unknown device type\0'))]);
    const full = message(NLMSG_ERROR, NLM_F_ACK_TLVS, 9, Buffer.concat([errno(95), request, tlvs]));
    expect(extendedAckMessage(full, NLM_F_ACK_TLVS, 16, full.length)).toBe('Unknown device type');
    const capped = message(NLMSG_ERROR, NLM_F_ACK_TLVS | NLM_F_CAPPED, 9, Buffer.concat([errno(95), request.subarray(0, 16), tlvs]));
    expect(extendedAckMessage(capped, NLM_F_ACK_TLVS | NLM_F_CAPPED, 16, capped.length)).toBe('Unknown device type');
    const plain = message(NLMSG_ERROR, 0, 9, Buffer.concat([errno(95), request]));
    expect(extendedAckMessage(plain, 0, 16, plain.length)).toBeUndefined();
  });
});
