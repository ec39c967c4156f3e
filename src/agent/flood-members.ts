/**
 * Which hosts carry each network, and at which underlay address: the members index in etcd
 * (schema.membersOf), as last listed and watched. The only owner of that state; pure.
 */
import type { MemberChange, StoredValue } from '../store/source.js';
import { parseMember } from '../store/schema.js';

export interface MembersLog {
  warn(fields: Record<string, unknown>, msg: string): void;
}

/** One other host of a network. */
export interface FloodPeer {
  host: string;
  address: string;
}

export class FloodMembers {
  /** Network hex → host → address; a network absent here is not watched (scope attached: not attached). */
  private readonly byNetwork = new Map<string, Map<string, string>>();
  /** Bumped on every change of a network's members: lets readers keep what they derive from them. */
  private readonly versions = new Map<string, number>();

  constructor(
    private readonly hostname: string,
    private readonly log: MembersLog,
  ) {}

  /** A fresh list of every watched network (the full round that follows visits them all). */
  replaceAll(members: Map<string, Map<string, StoredValue>>): void {
    for (const hex of this.byNetwork.keys()) this.bump(hex);
    this.byNetwork.clear();
    for (const [hex, hosts] of members) this.replace(hex, hosts);
  }

  /** The whole index of one network (undefined: no longer watched). */
  replace(hex: string, hosts: Map<string, StoredValue> | undefined): void {
    this.bump(hex);
    if (!hosts) return void this.byNetwork.delete(hex);
    const addresses = new Map<string, string>();
    for (const [host, stored] of hosts) {
      const address = this.addressOf(hex, host, stored);
      if (address !== undefined) addresses.set(host, address);
    }
    this.byNetwork.set(hex, addresses);
  }

  /** One watched change; returns true when another host's entry changed (this host's own key changes nothing here). */
  apply(change: MemberChange): boolean {
    let hosts = this.byNetwork.get(change.hex);
    if (!hosts) this.byNetwork.set(change.hex, (hosts = new Map()));
    const before = hosts.get(change.host);
    const address = change.value ? this.addressOf(change.hex, change.host, change.value) : undefined;
    if (address === undefined) hosts.delete(change.host);
    else hosts.set(change.host, address);
    const changed = change.host !== this.hostname && before !== address;
    if (changed) this.bump(change.hex);
    return changed;
  }

  /** Changes whenever the network's other members do. */
  version(hex: string): number {
    return this.versions.get(hex) ?? 0;
  }

  private bump(hex: string): void {
    this.versions.set(hex, this.version(hex) + 1);
  }

  /** The other hosts of the network, sorted by host name. */
  peers(hex: string): FloodPeer[] {
    const hosts = this.byNetwork.get(hex);
    if (!hosts) return [];
    const peers: FloodPeer[] = [];
    for (const [host, address] of hosts) if (host !== this.hostname) peers.push({ host, address });
    return peers.sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  }

  private addressOf(hex: string, host: string, stored: StoredValue): string | undefined {
    const parsed = parseMember(stored.value);
    if (parsed.ok) return parsed.value.address;
    this.log.warn({ vni: hex, host, op: 'members', reason: parsed.reason }, `ignoring ${host}'s members entry of network ${hex}: ${parsed.reason}`);
    return undefined;
  }
}
