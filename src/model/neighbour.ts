/**
 * A neighbour entry as vxnetd reasons about it: plain data, filled by the
 * rtnetlink codec in kernel/ (neighbour-codec.ts). For unicast flooding these
 * are a vxlan's forwarding entries (family AF_BRIDGE): the all-zeros MAC with
 * a remote VTEP's address, one per remote.
 */

/** The entry belongs to the device itself (the vxlan's own table), not to its bridge master. */
export const NTF_SELF = 0x02;
/** Set by an administrator: never expires, never replaced by learning. */
export const NUD_PERMANENT = 0x80;

export interface Neighbour {
  /** AF_BRIDGE (7) for forwarding entries. */
  family: number;
  /** The device's ifindex. */
  index: number;
  /** NUD_* */
  state: number;
  /** NTF_* */
  flags: number;
  /** NDA_LLADDR: the MAC (all zeros: flood to `destination`). */
  mac?: Buffer;
  /** NDA_DST: the remote VTEP's IP address. */
  destination?: Buffer;
}
