import { parseGroupBase } from '../../src/model/group.js';
import { deterministicMac } from '../../src/model/mac.js';
import { desiredNetwork, type HostSettings, type Underlay } from '../../src/model/network.js';
import { ownerAlias } from '../../src/model/vni.js';
import type { Ownership } from '../../src/plan/plan.js';

export const HOST: HostSettings = { hostname: 'hv1', groupBase: parseGroupBase('ff05::'), ttl: 5, dstport: 4789 };
export const UNDERLAY: Underlay = { name: 'u0', index: 2, mtu: 1500, ipv6: true };

export function desired(vni: number, mtu?: number, underlay: Partial<Underlay> = {}) {
  return desiredNetwork(vni, { type: 'vxlan', ...(mtu ? { mtu } : {}) }, HOST, { ...UNDERLAY, ...underlay });
}

export function ownership(vni: number): Ownership {
  return {
    alias: ownerAlias(vni.toString(16)),
    bridgeMac: deterministicMac(HOST.hostname, 'bridge', vni),
    vxlanMac: deterministicMac(HOST.hostname, 'vxlan', vni),
  };
}
