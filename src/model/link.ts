/**
 * A kernel network device as vxnetd reasons about it: plain data, shared by
 * model/, plan/, metrics/ and the rtnetlink codec in kernel/ (which fills it).
 */

export const IFF_UP = 0x1;
export const IFF_LOWER_UP = 0x10000;
/** IFLA_INET6_ADDR_GEN_MODE value: no IPv6 link-local address is generated for the device. */
export const IN6_ADDR_GEN_MODE_NONE = 1;

export interface BridgeAttributes {
  /** IFLA_BR_MCAST_SNOOPING */
  multicastSnooping?: boolean;
}

export interface VxlanAttributes {
  id?: number;
  group?: Buffer;
  link?: number;
  local?: Buffer;
  ttl?: number;
  learning?: boolean;
  port?: number;
}

export interface LinkStats {
  rxPackets: number;
  txPackets: number;
  rxBytes: number;
  txBytes: number;
  rxErrors: number;
  txErrors: number;
  rxDropped: number;
  txDropped: number;
}

/** A link as vxnetd sees it: only what planning, repair and metrics need. */
export interface Link {
  index: number;
  name: string;
  flags: number;
  mtu: number;
  master?: number;
  alias?: string;
  mac?: Buffer;
  kind?: string;
  vxlan?: VxlanAttributes;
  operstate?: number;
  carrier?: number;
  carrierChanges?: number;
  stats?: LinkStats;
  /** IFLA_INET6_ADDR_GEN_MODE; absent when the device has no IPv6 (no IPv6 in the kernel, or an MTU below 1280). */
  addrGenMode?: number;
}
