/**
 * The second kind of kernel object, for unicast flooding (DESIGN.md §9): a network's vxlan floods
 * broadcast and unknown traffic to one all-zeros forwarding entry per other host that carries the
 * network (`00:00:00:00:00:00 dst <address> self permanent`), exactly those. The vxlan is the
 * device pair's (DevicePairs); this kind only adds and removes its all-zeros entries, and leaves
 * every other entry of it (learned MACs, other tools' entries for specific MACs) alone.
 */
import { KernelError } from '../kernel/errors.js';
import { FLOOD_MAC } from '../kernel/neighbour-codec.js';
import type { Kernel, NeighbourEvent } from '../kernel/rtnl.js';
import { formatAddress, parseAddress, type GroupFamily } from '../model/group.js';
import { hexFromOwnerAlias } from '../model/identity.js';
import { NTF_SELF, NUD_PERMANENT, type Neighbour } from '../model/neighbour.js';
import { vxlanName } from '../model/vni.js';
import type { ObjectKind, Outcome } from '../reconcile/loop.js';
import type { BulkApplyGuard } from './bulk-apply.js';
import type { DesiredState } from './desired-state.js';
import { DeviceTable } from './device-table.js';
import type { FloodMembers } from './flood-members.js';
import type { KernelFacts } from './kernel-facts.js';
import type { NetworkStatuses } from './network-statuses.js';

export interface FloodLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export const FLOOD_ENTRIES = 'flood';

/** Forwarding entries' address family. */
const AF_BRIDGE = 7;

/** What a full round's dump found for one network: its vxlan and that vxlan's all-zeros entries. */
export interface FloodHint {
  vxlanIndex: number;
  entries: Neighbour[];
}

/** An all-zeros entry of a device's own table: what this kind owns on a managed vxlan. */
export function isFloodEntry(entry: Neighbour): boolean {
  return entry.family === AF_BRIDGE && (entry.flags & NTF_SELF) !== 0 && entry.mac !== undefined && entry.mac.equals(FLOOD_MAC);
}

/** The entry as this kind makes it: permanent, so it never ages out and learning never replaces it. */
function isAsMade(entry: Neighbour): boolean {
  return (entry.state & NUD_PERMANENT) !== 0;
}

export class FloodEntries implements ObjectKind<FloodHint> {
  readonly name = FLOOD_ENTRIES;
  /** Peer addresses that cannot be flooded to (another family, not an address), reported once per network and address. */
  private readonly unusable = new Map<string, string>();
  /**
   * Each network's wanted destinations, kept until its members change: every notification of the
   * agent's own appends asks for them (20,000 at 1,000 networks × 20 peers), and parsing each
   * peer's address every time was a measurable share of the agent's CPU (bench/RESULTS.md).
   */
  private readonly wantedCache = new Map<string, { version: number; destinations: Set<string> }>();
  /** Each vxlan's all-zeros entries: a reconcile outside a full round needs no dump (one per network per member change was most of the requests). */
  private readonly known = new DeviceTable<Neighbour>(destinationKey);

  constructor(
    private readonly kernel: Kernel,
    private readonly desired: DesiredState,
    private readonly facts: KernelFacts,
    private readonly members: FloodMembers,
    private readonly statuses: NetworkStatuses,
    private readonly bulk: BulkApplyGuard,
    private readonly log: FloodLog,
    private readonly family: GroupFamily,
  ) {}

  /** Runs after DevicePairs' in the same round (registration order): the vxlans' ifindexes are fresh. */
  async observeAll(): Promise<Map<string, FloodHint | undefined>> {
    const byIndex = new Map<number, Neighbour[]>();
    for (const entry of await this.kernel.dumpForwardingEntries()) {
      if (!isFloodEntry(entry)) continue;
      let entries = byIndex.get(entry.index);
      if (!entries) byIndex.set(entry.index, (entries = []));
      entries.push(entry);
    }
    const vxlans: number[] = [];
    const visits = new Map<string, FloodHint | undefined>();
    for (const hex of this.desired.names()) {
      if (!this.desired.isWanted(hex)) continue;
      const vxlanIndex = this.facts.vxlanIndex(hex);
      if (vxlanIndex !== undefined) vxlans.push(vxlanIndex);
      visits.set(hex, vxlanIndex === undefined ? undefined : { vxlanIndex, entries: byIndex.get(vxlanIndex) ?? [] });
    }
    this.known.replaceAll(vxlans, [...byIndex.values()].flat());
    return visits;
  }

  async reconcile(hex: string, hint: FloodHint | undefined): Promise<Outcome> {
    if (!this.desired.isWanted(hex)) {
      // Its vxlan goes with the device pair, and the entries with it.
      this.statuses.flood(hex, undefined);
      this.forgetUnusable(hex);
      return { result: 'done', changed: false, forget: true };
    }
    if (!this.statuses.devicesReady(hex)) return { result: 'blocked', reason: `waiting for the devices of network ${hex}` };

    let vxlanIndex: number | undefined;
    try {
      vxlanIndex = hint?.vxlanIndex ?? (await this.ownVxlanIndex(hex));
    } catch (error) {
      return this.failed(hex, error);
    }
    // Gone since the devices were reported ready: their repair reports them ready again, and that brings this back.
    if (vxlanIndex === undefined) return { result: 'blocked', reason: `${vxlanName(hex)} not found` };
    const wanted = this.wantedDestinations(hex);
    let entries: Neighbour[];
    try {
      entries = hint?.entries ?? this.known.get(vxlanIndex) ?? (await this.dumpOne(vxlanIndex));
    } catch (error) {
      return this.failed(hex, error);
    }

    const have = new Set<string>();
    const extra: Neighbour[] = [];
    for (const entry of entries) {
      const destination = entry.destination?.toString('hex');
      if (destination !== undefined && wanted.has(destination) && isAsMade(entry) && !have.has(destination)) have.add(destination);
      else extra.push(entry);
    }
    const missing = [...wanted].filter((destination) => !have.has(destination));
    if (extra.length === 0 && missing.length === 0) {
      this.statuses.flood(hex, { peers: wanted.size });
      return { result: 'done', changed: false };
    }

    this.bulk.applyStarted();
    try {
      // All at once, deletions first: entries are independent, and requests sent together cross to the request thread together.
      // One log line per kind of change of the network (one decision), naming every destination.
      if (extra.length) {
        await settleAll(
          extra.map((entry) =>
            this.kernel.deleteForwardingEntry(
              { ...floodEntry(vxlanIndex, entry.destination), state: entry.state },
              `delete flood entry of ${vxlanName(hex)} to ${describeDestination(entry)}${isAsMade(entry) ? '' : ' (not permanent)'}`,
            ),
          ),
        );
        const to = extra.map((entry) => `${describeDestination(entry)}${isAsMade(entry) ? '' : ' (not permanent)'}`);
        this.log.info({ vni: hex, device: vxlanName(hex), op: 'deleteFloodEntries', entries: extra.length }, `delete flood entries of ${vxlanName(hex)} to ${to.join(', ')}`);
      }
      if (missing.length) {
        const to = missing.map((destination) => formatAddress(Buffer.from(destination, 'hex')));
        await settleAll(
          missing.map((destination, i) =>
            this.kernel.appendForwardingEntry(
              floodEntry(vxlanIndex, Buffer.from(destination, 'hex')),
              `append flood entry of ${vxlanName(hex)} to ${to[i]}`,
            ),
          ),
        );
        this.log.info({ vni: hex, device: vxlanName(hex), op: 'appendFloodEntries', entries: missing.length }, `append flood entries of ${vxlanName(hex)} to ${to.join(', ')}`);
      }
      // What the kernel now has, whether or not its notifications arrive (they are paused in a bulk apply).
      for (const entry of extra) this.known.apply('del', entry);
      for (const destination of missing) this.known.apply('new', floodEntry(vxlanIndex, Buffer.from(destination, 'hex')));
    } catch (error) {
      this.known.forget(vxlanIndex);
      // The vxlan was replaced or deleted meanwhile: plan again from the kernel's state.
      if (error instanceof KernelError && error.errno === 'ENODEV') return { result: 'stale' };
      return this.failed(hex, error);
    } finally {
      this.bulk.applyEnded();
    }
    this.statuses.flood(hex, { peers: wanted.size });
    return { result: 'done', changed: true };
  }

  /** True when a notification shows an entry as the last reconcile left it, so that it needs no reconcile. */
  explains(hex: string, { type, neighbour }: NeighbourEvent): boolean {
    const destination = neighbour.destination?.toString('hex');
    const wanted = destination !== undefined && this.wantedDestinations(hex).has(destination);
    return type === 'new' ? wanted && isAsMade(neighbour) : !wanted;
  }

  /** The network a notification is about: an all-zeros entry of one of our vxlans (what the kind knows of that vxlan follows it). */
  networkOf(event: NeighbourEvent): string | undefined {
    if (!isFloodEntry(event.neighbour)) return undefined;
    this.known.apply(event.type, event.neighbour);
    const hex = this.facts.networkOfVxlan(event.neighbour.index);
    return hex !== undefined && this.desired.isWanted(hex) ? hex : undefined;
  }

  private async dumpOne(vxlanIndex: number): Promise<Neighbour[]> {
    const entries = (await this.kernel.dumpForwardingEntries(vxlanIndex)).filter(isFloodEntry);
    this.known.set(vxlanIndex, entries);
    return entries;
  }

  private async ownVxlanIndex(hex: string): Promise<number | undefined> {
    const known = this.facts.vxlanIndex(hex);
    if (known !== undefined) return known;
    const vxlan = await this.kernel.getLink(vxlanName(hex));
    if (!vxlan || hexFromOwnerAlias(vxlan.alias) !== hex) return undefined;
    this.facts.noteVxlan(hex, vxlan);
    return vxlan.index;
  }

  /** The other hosts' addresses, as hex of their bytes; those not of the overlay's family are reported, never flooded to. */
  private wantedDestinations(hex: string): Set<string> {
    const version = this.members.version(hex);
    const cached = this.wantedCache.get(hex);
    if (cached?.version === version) return cached.destinations;
    const wanted = new Set<string>();
    this.wantedCache.set(hex, { version, destinations: wanted });
    for (const peer of this.members.peers(hex)) {
      const bytes = parseAddress(peer.address, this.family);
      if (bytes) {
        wanted.add(bytes.toString('hex'));
        continue;
      }
      const key = `${hex} ${peer.host}`;
      if (this.unusable.get(key) === peer.address) continue;
      this.unusable.set(key, peer.address);
      this.log.warn(
        { vni: hex, host: peer.host, address: peer.address, op: 'members' },
        `network ${hex}: host ${peer.host} publishes ${JSON.stringify(peer.address)}, not an ${this.family === 'inet6' ? 'IPv6' : 'IPv4'} address like this overlay's: not flooded to`,
      );
    }
    return wanted;
  }

  private forgetUnusable(hex: string): void {
    this.wantedCache.delete(hex);
    for (const key of this.unusable.keys()) if (key.startsWith(`${hex} `)) this.unusable.delete(key);
  }

  private failed(hex: string, error: unknown): Outcome {
    if (!(error instanceof KernelError)) throw error;
    this.statuses.flood(hex, { problem: error.message });
    return { result: 'failed', reason: error.message };
  }
}

/** Waits for every request, then throws the first failure: none is left running behind a thrown error. */
async function settleAll(requests: Array<Promise<void>>): Promise<void> {
  const failed = (await Promise.allSettled(requests)).find((result) => result.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** An all-zeros entry of a vxlan's own table, as this kind makes it. */
function floodEntry(index: number, destination: Buffer | undefined): Neighbour {
  return { family: AF_BRIDGE, index, state: NUD_PERMANENT, flags: NTF_SELF, mac: FLOOD_MAC, ...(destination ? { destination } : {}) };
}

function destinationKey(entry: Neighbour): string {
  return entry.destination?.toString('hex') ?? '-';
}

function describeDestination(entry: Neighbour): string {
  return entry.destination ? formatAddress(entry.destination) : 'no destination';
}
