/** The desired kernel objects of one network, derived from its spec and the host's settings. */
import { encapsulationOverhead, groupFor, noGroup, reservedGroupReason, type GroupBase, type MulticastGroup } from './group.js';
import { deterministicMac } from './mac.js';
import { SpecError, type NetworkSpec } from './spec.js';
import { ownerAlias } from './identity.js';
import { bridgeName, vniHex, vxlanName } from './vni.js';

/**
 * How a vxlan floods broadcast and unknown traffic: to its multicast group (base + VNI), or, for
 * underlays without multicast, to one all-zeros forwarding entry per other host of the network.
 */
export type FloodMode = 'multicast' | 'unicast';

export interface HostSettings {
  hostname: string;
  /** Its family is the overlay's (in unicast mode too); its value only matters in multicast mode. */
  groupBase: GroupBase;
  /** Default multicast. */
  flood?: FloodMode;
  ttl: number;
  dstport: number;
  /** Optional source address, bytes of the same family as the group. */
  local?: Buffer;
}

export interface Underlay {
  name: string;
  index: number;
  mtu: number;
  /** The kernel runs IPv6 (the underlay reports an IPv6 address generation mode). */
  ipv6: boolean;
}

/** Below this MTU the kernel keeps no IPv6 state on a device at all. */
const IPV6_MIN_MTU = 1280;

export interface DesiredBridge {
  name: string;
  alias: string;
  mac: Buffer;
  mtu: number;
  /**
   * Set when the bridge is created, never enforced afterwards (an operator may turn it on for a
   * network). Off: a snooping bridge joins the all-snoopers groups itself, so the host sends
   * IGMP/MLD reports into every tenant segment and holds IPv4 and IPv6 multicast neighbours for
   * every bridge in tables every namespace shares (gc_thresh3 1024 by default: forced garbage
   * collection from ~1,000 networks on, and twice the kernel time at 4,000). Without a
   * querier in the segment a snooping bridge floods multicast anyway, as the vxlan does.
   */
  multicastSnooping: boolean;
}

export interface DesiredVxlan {
  name: string;
  alias: string;
  mac: Buffer;
  mtu: number;
  id: number;
  /** In unicast mode the unspecified address of the overlay's family: no group, but the vxlan's sockets are of that family. */
  group: MulticastGroup;
  flood: FloodMode;
  ttl: number;
  port: number;
  link: number;
  local?: Buffer;
}

/** Whose the network's devices are: the agent's identity as the alias spells it, and the network's incarnation. */
export interface NetworkOwner {
  identity: string;
  /** The create revision of the network's etcd key: a network deleted and created again is another incarnation. */
  incarnation: number;
}

export interface DesiredNetwork {
  vni: number;
  hex: string;
  owner: NetworkOwner;
  /**
   * No IPv6 link-local address on either device (addrgenmode none): the host stays off the
   * tenant's segment (no DAD, MLD reports or router solicitations flooded over the overlay, not
   * reachable from VMs by link-local), and the kernel skips the per-device IPv6 work that
   * dominated its cost at thousands of networks. False where the devices have no IPv6 anyway.
   */
  quietIpv6: boolean;
  bridge: DesiredBridge;
  vxlan: DesiredVxlan;
}

/** The largest MTU the overlay can carry over this underlay without fragmenting. */
export function overlayMtuLimit(underlay: Underlay, host: HostSettings): number {
  return underlay.mtu - encapsulationOverhead(host.groupBase.family);
}

export function desiredNetwork(vni: number, spec: NetworkSpec, host: HostSettings, underlay: Underlay, owner: NetworkOwner): DesiredNetwork {
  const hex = vniHex(vni);
  const flood = host.flood ?? 'multicast';
  const group = flood === 'unicast' ? noGroup(host.groupBase.family) : groupFor(host.groupBase, vni);
  const reserved = flood === 'multicast' ? reservedGroupReason(group) : undefined;
  if (reserved) {
    throw new SpecError('reserved_group', `VNI ${hex} maps to multicast group ${group.text}, which is reserved (${reserved}); use another VNI`);
  }
  const limit = overlayMtuLimit(underlay, host);
  if (spec.mtu !== undefined && spec.mtu > limit) {
    throw new SpecError('mtu_above_underlay', `mtu ${spec.mtu} exceeds underlay ${underlay.name} limit ${limit}`);
  }
  const mtu = spec.mtu ?? limit;
  const alias = ownerAlias(hex, owner.identity, owner.incarnation);
  return {
    vni,
    hex,
    owner,
    quietIpv6: underlay.ipv6 && mtu >= IPV6_MIN_MTU,
    bridge: { name: bridgeName(hex), alias, mac: deterministicMac(host.hostname, 'bridge', vni), mtu, multicastSnooping: false },
    vxlan: {
      name: vxlanName(hex),
      alias,
      mac: deterministicMac(host.hostname, 'vxlan', vni),
      mtu,
      id: vni,
      group,
      flood,
      ttl: host.ttl,
      port: host.dstport,
      link: underlay.index,
      ...(host.local ? { local: host.local } : {}),
    },
  };
}
