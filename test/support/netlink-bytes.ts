/** Netlink bytes written out by hand, to check the codecs against. */

/** One attribute: length, type, payload, padding to 4. */
export function attr(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(4);
  header.writeUInt16LE(4 + payload.length, 0);
  header.writeUInt16LE(type, 2);
  return Buffer.concat([header, payload, Buffer.alloc((4 - (payload.length % 4)) % 4)]);
}

export const u32 = (v: number) => Buffer.from(Uint32Array.of(v).buffer);
