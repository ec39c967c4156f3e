/**
 * An IP address on a kernel network device as vxnetd reasons about it: plain
 * data, filled by the rtnetlink codec in kernel/ (address-codec.ts).
 */

/** The address is not checked for duplicates on the link (IPv6). */
export const IFA_F_NODAD = 0x02;
/** Duplicate address detection found the address on another node: the kernel keeps it, unusable. */
export const IFA_F_DADFAILED = 0x08;
/** Still being checked for duplicates (or DAD failed). */
export const IFA_F_TENTATIVE = 0x40;
/** Configured, not learnt (no lifetime). */
export const IFA_F_PERMANENT = 0x80;
/**
 * The IFA_PROTO vxnetd gives the addresses it adds (any value above the kernel's own, 0–3, is
 * userspace's): how an address on a bridge is provably vxnetd's, since addresses carry no alias.
 */
export const VXNETD_ADDRESS_PROTOCOL = 0x76;

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
  /** IFA_PROTO: who added it (kernel 6.3 and later report it). */
  protocol?: number;
  /** Seconds; 0xffffffff for forever. */
  validLifetime?: number;
  preferredLifetime?: number;
}
