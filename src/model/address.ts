/**
 * An IP address on a kernel network device as vxnetd reasons about it: plain
 * data, filled by the rtnetlink codec in kernel/ (address-codec.ts).
 */

/** The address is not checked for duplicates on the link (IPv6). */
export const IFA_F_NODAD = 0x02;
/** Configured, not learnt (no lifetime). */
export const IFA_F_PERMANENT = 0x80;

export interface Address {
  /** AF_INET (2) or AF_INET6 (10). */
  family: number;
  /** The device's ifindex. */
  index: number;
  prefixLength: number;
  /** IFA_ADDRESS: the address (the peer's on a point-to-point link). */
  address: Buffer;
  /** IFA_LOCAL: the local address, when it differs or for IPv4. */
  local?: Buffer;
  /** IFA_F_* (IFA_FLAGS when present: it carries the bits beyond 8). */
  flags: number;
  /** RT_SCOPE_*: 0 universe, 253 link, 254 host. */
  scope: number;
  /** Seconds; 0xffffffff for forever. */
  validLifetime?: number;
  preferredLifetime?: number;
}
