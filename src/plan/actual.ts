/** Groups kernel links by the network they belong to, by name and by owner alias. */
import type { Link } from '../model/link.js';
import type { Underlay } from '../model/network.js';
import { hexFromOwnerAlias } from '../model/identity.js';
import { parseVniHex } from '../model/vni.js';
import type { ActualNetwork } from './plan.js';

const MANAGED_NAME = /^(vxlan|br)([0-9a-f]{1,6})$/;

/** The network hex a device name would belong to, if the name is one vxnetd uses. */
export function hexFromDeviceName(name: string): { hex: string; role: 'vxlan' | 'bridge' } | undefined {
  const match = MANAGED_NAME.exec(name);
  if (!match || parseVniHex(match[2]!) === undefined) return undefined;
  return { hex: match[2]!, role: match[1] === 'br' ? 'bridge' : 'vxlan' };
}

/** The underlay as planning needs it; the kernel runs IPv6 when the underlay reports an address generation mode. */
export function underlayOf(link: Link): Underlay {
  return { name: link.name, index: link.index, mtu: link.mtu, ipv6: link.addrGenMode !== undefined };
}

export function emptyActual(): ActualNetwork {
  return { strays: [] };
}

export function groupLinksByNetwork(links: Iterable<Link>): Map<string, ActualNetwork> {
  const networks = new Map<string, ActualNetwork>();
  const entry = (hex: string) => {
    let actual = networks.get(hex);
    if (!actual) networks.set(hex, (actual = emptyActual()));
    return actual;
  };
  for (const link of links) {
    const named = hexFromDeviceName(link.name);
    if (named) entry(named.hex)[named.role] = link;
    const aliasHex = hexFromOwnerAlias(link.alias);
    if (aliasHex && aliasHex !== named?.hex) entry(aliasHex).strays.push(link);
  }
  return networks;
}
