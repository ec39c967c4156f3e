/**
 * desired + actual → ordered operations for one network (pure, no I/O).
 * Mirrors felix: the plan is data; the executor in agent/ carries it out.
 */
import { IFF_UP, IN6_ADDR_GEN_MODE_NONE, type Link } from '../model/link.js';
import { formatAddress } from '../model/group.js';
import { deterministicMac } from '../model/mac.js';
import type { DesiredNetwork } from '../model/network.js';
import { legacyAlias, parseOwnerAlias } from '../model/identity.js';
import { vniHex } from '../model/vni.js';
import type { CreateVxlan, LinkChanges, Operation } from './operations.js';

/** How to recognise this network's devices. */
export interface Ownership {
  hex: string;
  /** This agent's identity, as aliases spell it (model/identity.ts). */
  identity: string;
  /** Devices of this identity are adopted in place: the operator's explicit take-over (a renamed host, a new etcd cluster). */
  takeOver?: string;
  bridgeMac: Buffer;
  vxlanMac: Buffer;
}

/** Ownership of network `vni` on `hostname`: the identity its devices carry and the MACs vxnetd derives for them. */
export function ownershipOf(hostname: string, vni: number, identity: string, takeOver?: string): Ownership {
  return {
    hex: vniHex(vni),
    identity,
    ...(takeOver !== undefined ? { takeOver } : {}),
    bridgeMac: deterministicMac(hostname, 'bridge', vni),
    vxlanMac: deterministicMac(hostname, 'vxlan', vni),
  };
}

export interface ActualNetwork {
  bridge?: Link;
  vxlan?: Link;
  /** Links whose alias names this network, under other names (e.g. renamed by hand). */
  strays: Link[];
}

export interface NetworkPlan {
  ops: Operation[];
  /** Foreign devices in the way; when present, nothing is done for this network. */
  conflicts: string[];
  /** Devices of this network's VNI that are not this agent's to touch, left as they are: to report. */
  leftAlone: string[];
}

/**
 * Whose a device is, as far as this network is concerned:
 * - `ours`: our identity and, when one is given, this incarnation of the network; or no alias at
 *   all but exactly our MAC (a crash between create and set-alias leaves that);
 * - `adoptable`: made by vxnetd 0.1 (alias `vxnetd:<hex>`, no identity) or of the identity the
 *   operator takes over: ours once its alias is rewritten, in place;
 * - `earlier`: ours, but of an earlier network with the same VNI (deleted and created again while
 *   this agent was away);
 * - `other-identity`: made by vxnetd under another host name, prefix or etcd cluster;
 * - `foreign`: anything else.
 */
export type Claim = 'ours' | 'adoptable' | 'earlier' | 'other-identity' | 'foreign';

export function claimOf(link: Link, owner: Ownership, incarnation?: number): Claim {
  if (link.alias === undefined || link.alias === '') {
    const mac = link.kind === 'vxlan' ? owner.vxlanMac : owner.bridgeMac;
    return link.mac !== undefined && link.mac.equals(mac) ? 'ours' : 'foreign';
  }
  const alias = parseOwnerAlias(link.alias);
  if (!alias || alias.hex !== owner.hex) return 'foreign';
  if (alias.identity === undefined || alias.identity === owner.takeOver) return 'adoptable';
  if (alias.identity !== owner.identity) return 'other-identity';
  return incarnation !== undefined && alias.incarnation !== incarnation ? 'earlier' : 'ours';
}

/** A device is ours to change: our identity and incarnation (or our MAC and no alias). */
export function isOwned(link: Link, owner: Ownership, incarnation?: number): boolean {
  return claimOf(link, owner, incarnation) === 'ours';
}

export function planNetwork(hex: string, desired: DesiredNetwork | undefined, actual: ActualNetwork, owner: Ownership): NetworkPlan {
  const ops: Operation[] = [];
  const conflicts: string[] = [];
  const leftAlone: string[] = [];
  const deleteLink = (link: Link, why: string) => ops.push({ op: 'deleteLink', hex, name: link.name, index: link.index, why });

  if (!desired) {
    // Ports (vxlan) first, so the bridge never loses them one by one.
    for (const [link, kind] of [[actual.vxlan, 'vxlan'], ...actual.strays.map((stray) => [stray, 'vxlan'] as const), [actual.bridge, 'bridge']] as const) {
      if (!link) continue;
      const claim = claimOf(link, owner);
      if (claim !== 'foreign' && claim !== 'other-identity' && link.kind !== kind) leftAlone.push(wrongKind(link, kind));
      else if (claim === 'ours' || claim === 'earlier' || (claim === 'adoptable' && link.alias !== legacyAlias(hex))) deleteLink(link, 'network removed');
      // A device of vxnetd 0.1 could be any prefix's or cluster's: only a network this agent wants adopts it.
      else if (claim === 'adoptable') leftAlone.push(`${link.name} (alias ${JSON.stringify(link.alias)}) was made by an earlier vxnetd and is not wanted here: left alone`);
      else if (claim === 'other-identity') leftAlone.push(otherIdentity(link));
    }
    return { ops, conflicts, leftAlone };
  }

  const incarnation = desired.owner.incarnation;
  for (const [link, kind] of [[actual.bridge, 'bridge'], [actual.vxlan, 'vxlan']] as const) {
    if (!link) continue;
    const claim = claimOf(link, owner, incarnation);
    if (claim === 'foreign') conflicts.push(`device ${link.name} exists and is not managed by vxnetd (alias ${JSON.stringify(link.alias ?? '')}); remove or rename it`);
    else if (claim === 'other-identity') conflicts.push(otherIdentity(link));
    else if (link.kind !== kind) conflicts.push(wrongKind(link, kind));
  }
  if (conflicts.length) return { ops, conflicts, leftAlone };

  for (const stray of actual.strays) {
    const claim = claimOf(stray, owner, incarnation);
    if (claim === 'other-identity') leftAlone.push(otherIdentity(stray));
    // A renamed vxlan of ours would hold the VNI the real one needs; anything else (a renamed
    // bridge with ports, a tap someone labelled) is not ours to delete.
    else if (claim !== 'foreign' && stray.kind === 'vxlan') deleteLink(stray, `carries this network's alias under another name`);
    else if (claim !== 'foreign') leftAlone.push(wrongKind(stray, 'vxlan'));
  }

  // The ports of an earlier network with this VNI must not join this one: its bridge is re-created.
  const earlier = (link: Link | undefined) => link !== undefined && claimOf(link, owner, incarnation) === 'earlier';
  const bridge = earlier(actual.bridge) ? undefined : actual.bridge;
  const vxlan = earlier(actual.vxlan) ? undefined : actual.vxlan;
  if (actual.vxlan && !vxlan) deleteLink(actual.vxlan, `belongs to an earlier network ${hex} (${describeIncarnation(actual.vxlan)}, now ${incarnation})`);
  if (actual.bridge && !bridge) deleteLink(actual.bridge, `belongs to an earlier network ${hex} (${describeIncarnation(actual.bridge)}, now ${incarnation}): re-created, so that its ports do not join the new network`);

  const bridgeOps = planBridge(hex, desired, bridge);
  ops.push(...bridgeOps.ops);
  ops.push(...planVxlan(hex, desired, vxlan, bridgeOps.recreated ? undefined : bridge?.index));
  return { ops, conflicts, leftAlone };
}

function wrongKind(link: Link, kind: 'bridge' | 'vxlan'): string {
  return `device ${link.name} carries vxnetd's alias (${JSON.stringify(link.alias ?? '')}) but is ${link.kind ? `a ${link.kind}` : 'of unknown kind'}${link.name.startsWith(kind === 'bridge' ? 'br' : 'vxlan') ? `, not a ${kind}` : ' under another name'}: left alone; remove or rename it`;
}

function otherIdentity(link: Link): string {
  const identity = parseOwnerAlias(link.alias)?.identity ?? '';
  return `device ${link.name} belongs to vxnetd of another identity (${identity}): left alone; if this host was renamed or moved to another etcd cluster, take its devices over with --take-over ${JSON.stringify(identity)}`;
}

function describeIncarnation(link: Link): string {
  return `incarnation ${parseOwnerAlias(link.alias)?.incarnation ?? 'unknown'}`;
}

/**
 * Whether one device, as a link notification shows it, is already what the desired state
 * asks for: the same rules as planNetwork, so a notification needs no reconcile exactly
 * when a reconcile would change nothing on that device. bridgeIndex: the network's bridge
 * as last seen.
 */
export function deviceMatches(desired: DesiredNetwork, link: Link, owner: Ownership, bridgeIndex: number | undefined): boolean {
  if (!isOwned(link, owner, desired.owner.incarnation)) return false;
  if (link.name === desired.bridge.name) return planBridge(desired.hex, desired, link).ops.length === 0;
  if (link.name === desired.vxlan.name) return bridgeIndex !== undefined && planVxlan(desired.hex, desired, link, bridgeIndex).length === 0;
  return false;
}

function planBridge(hex: string, desired: DesiredNetwork, bridge: Link | undefined): { ops: Operation[]; recreated: boolean } {
  const want = desired.bridge;
  const create: Operation = { op: 'createBridge', hex, name: want.name, mac: want.mac, alias: want.alias, mtu: want.mtu, quietIpv6: desired.quietIpv6, multicastSnooping: want.multicastSnooping };
  if (!bridge) return { ops: [create], recreated: true };
  const changes: LinkChanges = {};
  if (bridge.mtu !== want.mtu) changes.mtu = want.mtu;
  if (!(bridge.flags & IFF_UP)) changes.up = true;
  if (bridge.alias !== want.alias) changes.alias = want.alias;
  if (needsQuietIpv6(desired.quietIpv6, bridge)) changes.addrGenMode = IN6_ADDR_GEN_MODE_NONE;
  return { ops: hasChanges(changes) ? [{ op: 'updateLink', hex, name: bridge.name, changes }] : [], recreated: false };
}

function planVxlan(hex: string, desired: DesiredNetwork, vxlan: Link | undefined, bridgeIndex: number | undefined): Operation[] {
  const want = desired.vxlan;
  const create: CreateVxlan = {
    op: 'createVxlan',
    hex,
    name: want.name,
    mac: want.mac,
    alias: want.alias,
    mtu: want.mtu,
    quietIpv6: desired.quietIpv6,
    bridge: desired.bridge.name,
    vxlan: {
      id: want.id,
      group: want.group.bytes,
      link: want.link,
      ttl: want.ttl,
      port: want.port,
      learning: true,
      ...(want.local ? { local: want.local } : {}),
    },
  };
  if (!vxlan) return [create];

  const have = vxlan.vxlan && { ...vxlan.vxlan, group: isUnspecified(vxlan.vxlan.group) ? undefined : vxlan.vxlan.group };
  const replaceWhy =
    !have
      ? 'the kernel reports no vxlan attributes for it'
      : have.id !== want.id
        ? `id ${have.id} must be ${want.id}, which the kernel cannot change`
        : have.port !== want.port
          ? `dstport ${have.port} must be ${want.port}, which the kernel cannot change`
          : have.local && !want.local
            ? 'local address must be removed'
            : want.flood === 'unicast' && have.group
              ? `flooding is unicast now: its multicast group ${formatAddress(have.group)} must go, and with it the kernel's own flood entry`
              : want.flood === 'multicast' && !have.group
                ? `flooding is multicast now: it must get group ${want.group.text} in place of its unicast flood entries`
                : have.group && have.group.length !== want.group.bytes.length
              ? `group ${formatAddress(have.group)} must become ${want.group.text}, another address family, which the kernel cannot change in place`
              : have.local && want.local && have.local.length !== want.local.length
                ? `local ${formatAddress(have.local)} must become ${formatAddress(want.local)}, another address family, which the kernel cannot change in place`
                : undefined;
  if (replaceWhy) return [{ op: 'deleteLink', hex, name: vxlan.name, index: vxlan.index, why: replaceWhy }, create];

  const ops: Operation[] = [];
  const dataChanges: Partial<CreateVxlan['vxlan']> = {};
  if (want.flood === 'multicast' && !sameBytes(have!.group, want.group.bytes)) dataChanges.group = want.group.bytes;
  if (have!.link !== want.link) dataChanges.link = want.link;
  if (want.local && !sameBytes(have!.local, want.local)) dataChanges.local = want.local;
  if (have!.ttl !== want.ttl) dataChanges.ttl = want.ttl;
  if (have!.learning !== true) dataChanges.learning = true;
  if (Object.keys(dataChanges).length) ops.push({ op: 'updateVxlan', hex, name: vxlan.name, changes: dataChanges });

  const changes: LinkChanges = {};
  // The kernel refuses an MTU in the same message as vxlan data: a separate update.
  if (vxlan.mtu !== want.mtu) changes.mtu = want.mtu;
  if (bridgeIndex === undefined || vxlan.master !== bridgeIndex) changes.master = desired.bridge.name;
  if (!(vxlan.flags & IFF_UP)) changes.up = true;
  if (vxlan.alias !== want.alias) changes.alias = want.alias;
  if (needsQuietIpv6(desired.quietIpv6, vxlan)) changes.addrGenMode = IN6_ADDR_GEN_MODE_NONE;
  if (hasChanges(changes)) ops.push({ op: 'updateLink', hex, name: vxlan.name, changes });
  return ops;
}

/**
 * Only a device that reports a mode can be given one: one without IPv6 state (MTU below 1280)
 * gets it from the kernel, with the default mode, when its MTU is raised, and the link event
 * of that brings it here again.
 */
function needsQuietIpv6(wanted: boolean, link: Link): boolean {
  return wanted && link.addrGenMode !== undefined && link.addrGenMode !== IN6_ADDR_GEN_MODE_NONE;
}

function hasChanges(changes: LinkChanges): boolean {
  return Object.keys(changes).length > 0;
}

/** The kernel reports no group for a vxlan without one; a group of only zeros means the same. */
function isUnspecified(group: Buffer | undefined): boolean {
  return group === undefined || group.every((byte) => byte === 0);
}

function sameBytes(a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (!a || !b) return a === b;
  return a.equals(b);
}
