/** Kernel operations the planner emits. Devices are named, not indexed, so plans are pure. */
import { IN6_ADDR_GEN_MODE_NONE, type VxlanAttributes } from '../model/link.js';
import { formatAddress } from '../model/group.js';

export interface CreateBridge {
  op: 'createBridge';
  hex: string;
  name: string;
  mac: Buffer;
  alias: string;
  mtu: number;
  /** Set addrgenmode none before the bridge goes up. */
  quietIpv6: boolean;
  multicastSnooping: boolean;
}

export interface CreateVxlan {
  op: 'createVxlan';
  hex: string;
  name: string;
  mac: Buffer;
  alias: string;
  mtu: number;
  /** Set addrgenmode none before the vxlan goes up. */
  quietIpv6: boolean;
  bridge: string;
  vxlan: Required<Pick<VxlanAttributes, 'id' | 'group' | 'link' | 'ttl' | 'port' | 'learning'>> & Pick<VxlanAttributes, 'local'>;
}

export interface LinkChanges {
  mtu?: number;
  up?: boolean;
  /** Bridge name to enslave the device to. */
  master?: string;
  alias?: string;
  /** IFLA_INET6_ADDR_GEN_MODE */
  addrGenMode?: number;
}

export interface UpdateLink {
  op: 'updateLink';
  hex: string;
  name: string;
  changes: LinkChanges;
}

export interface UpdateVxlan {
  op: 'updateVxlan';
  hex: string;
  name: string;
  changes: VxlanAttributes;
}

export interface DeleteLink {
  op: 'deleteLink';
  hex: string;
  name: string;
  index: number;
  why: string;
}

export type Operation = CreateBridge | CreateVxlan | UpdateLink | UpdateVxlan | DeleteLink;


/** One line an operator can read in a log. */
export function describe(op: Operation): string {
  switch (op.op) {
    case 'createBridge':
      return `create bridge ${op.name} (mtu ${op.mtu}, multicast snooping ${op.multicastSnooping ? 'on' : 'off'})`;
    case 'createVxlan':
      return `create vxlan ${op.name} (id ${op.vxlan.id}, group ${formatAddress(op.vxlan.group)}, port ${op.vxlan.port}, ttl ${op.vxlan.ttl}, mtu ${op.mtu}, master ${op.bridge})`;
    case 'updateLink':
      return `update ${op.name}: ${describeChanges(op.changes)}`;
    case 'updateVxlan':
      return `update vxlan ${op.name}: ${describeVxlanChanges(op.changes)}`;
    case 'deleteLink':
      return `delete ${op.name} (${op.why})`;
  }
}

function describeChanges(changes: LinkChanges): string {
  const parts: string[] = [];
  if (changes.mtu !== undefined) parts.push(`mtu ${changes.mtu}`);
  if (changes.up !== undefined) parts.push(changes.up ? 'up' : 'down');
  if (changes.master !== undefined) parts.push(`master ${changes.master}`);
  if (changes.alias !== undefined) parts.push(`alias ${changes.alias}`);
  if (changes.addrGenMode !== undefined) parts.push(changes.addrGenMode === IN6_ADDR_GEN_MODE_NONE ? 'no IPv6 link-local (addrgenmode none)' : `addrgenmode ${changes.addrGenMode}`);
  return parts.join(', ');
}

function describeVxlanChanges(changes: VxlanAttributes): string {
  const parts: string[] = [];
  if (changes.group) parts.push(`group ${formatAddress(changes.group)}`);
  if (changes.link !== undefined) parts.push(`link ${changes.link}`);
  if (changes.local) parts.push(`local ${formatAddress(changes.local)}`);
  if (changes.ttl !== undefined) parts.push(`ttl ${changes.ttl}`);
  if (changes.learning !== undefined) parts.push(`learning ${changes.learning ? 'on' : 'off'}`);
  return parts.join(', ');
}
