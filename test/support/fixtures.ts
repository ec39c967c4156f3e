import { identityText, ownerAlias } from '../../src/model/identity.js';
import { parseGroupBase } from '../../src/model/group.js';
import { desiredNetwork, type HostSettings, type Underlay } from '../../src/model/network.js';
import { ownershipOf, type Ownership } from '../../src/plan/plan.js';

export const HOST: HostSettings = { hostname: 'hv1', groupBase: parseGroupBase('ff05::'), ttl: 5, dstport: 4789 };
export const UNDERLAY: Underlay = { name: 'u0', index: 2, mtu: 1500, ipv6: true };
/** The etcd data id of the unit tests' snapshots. */
export const ETCD_CLUSTER = 'cdf818194e3a8c32';
export const IDENTITY = identityText({ host: HOST.hostname, etcdCluster: ETCD_CLUSTER, prefix: '/v1' });
/** Every fixture network was created at this revision. */
export const INCARNATION = 1;

export function desired(vni: number, mtu?: number, underlay: Partial<Underlay> = {}, incarnation = INCARNATION) {
  return desiredNetwork(vni, { type: 'vxlan', ...(mtu ? { mtu } : {}) }, HOST, { ...UNDERLAY, ...underlay }, { identity: IDENTITY, incarnation });
}

export function ownership(vni: number, takeOver?: string): Ownership {
  return ownershipOf(HOST.hostname, vni, IDENTITY, takeOver);
}

/** The alias of a fixture network's devices. */
export function aliasOf(vni: number, incarnation = INCARNATION): string {
  return ownerAlias(vni.toString(16), IDENTITY, incarnation);
}
