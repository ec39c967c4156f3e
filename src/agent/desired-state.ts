/**
 * What etcd says this host should have: networks and (attached scope) attachments, as last
 * listed and watched. The only owner of that state; pure apart from counting spec errors once.
 */
import { desiredNetwork, type DesiredNetwork, type HostSettings, type Underlay } from '../model/network.js';
import { cutText, parseAttachment, parseNetworkSpec, SpecError, type SpecResult } from '../model/spec.js';
import { nonCanonicalVniReason, parseVniHex } from '../model/vni.js';
import type { Change, Snapshot, StoredValue } from '../store/source.js';
import { parseIpamEntry, type IpamEntry } from '../store/schema.js';
import { parseIpv6Prefix } from '../model/ipv6-prefix.js';

/** A routed network's IPAM entry as a router reads it, or why it cannot be used. */
export type RoutedNetwork = { revision: number; entry: IpamEntry } | { revision: number; problem: string };

export interface DesiredLog {
  warn(fields: Record<string, unknown>, msg: string): void;
}

interface NetworkEntry {
  modRevision: number;
  createRevision: number;
  spec: SpecResult;
  /** desiredNetwork() for one underlay and identity, kept because every full round asks again (sha256 MACs, group). */
  desired?: { underlay: Underlay; identity: string; result: DesiredNetwork | SpecError };
}

/** One network as this host should have it, or why it cannot. */
export type Wanted =
  | { wanted: false; attachedToMissing: boolean }
  | { wanted: true; specRevision: number; network: DesiredNetwork }
  | { wanted: true; specRevision: number; error: SpecError };

/** Spec errors remembered as counted: a key's name is up to ~1.5 MiB, and bad keys may keep coming. */
const MAX_COUNTED_ERRORS = 10_000;
/** Characters of an invalid key a log line shows. */
const MAX_KEY_SHOWN = 64;

export class DesiredState {
  private readonly networks = new Map<string, NetworkEntry>();
  /** Attachments, each checked once when it arrives. */
  private readonly attachments = new Map<string, { modRevision: number; error?: SpecError }>();
  private readonly countedErrors = new Set<string>();
  /** Routers only: IPAM entries by network, parsed once when they arrive. */
  private readonly ipam = new Map<string, RoutedNetwork>();
  /** Deletions need an authoritative list: missing data is not an empty desired state. */
  private listed = false;
  /** This agent's identity as device aliases spell it; known from the first list on (it names the etcd cluster). */
  private ownIdentity?: string;

  constructor(
    private readonly scope: 'all' | 'attached',
    private readonly host: HostSettings,
    private readonly log: DesiredLog,
    private readonly countSpecError: (reason: string) => void = () => undefined,
  ) {}

  /** True once a full list from etcd has been applied: from then on, absence means "delete". */
  get known(): boolean {
    return this.listed;
  }

  get identity(): string | undefined {
    return this.ownIdentity;
  }

  /** Replaces everything with a fresh list; returns the names known before, which may need deleting now. */
  replace(snapshot: Snapshot, identity: string): Set<string> {
    this.ownIdentity = identity;
    const before = new Set([...this.networks.keys(), ...this.attachments.keys(), ...snapshot.statuses.keys()]);
    this.networks.clear();
    this.attachments.clear();
    for (const name of this.ipam.keys()) before.add(name);
    this.ipam.clear();
    for (const [name, stored] of snapshot.ipam) this.setIpam(name, stored);
    for (const [name, stored] of snapshot.networks) this.setNetwork(name, stored);
    for (const [name, stored] of snapshot.attachments) this.setAttachment(name, stored);
    this.listed = true;
    return before;
  }

  /** Applies one watched change; returns the network it concerns, if its name is a VNI. */
  apply(change: Change): string | undefined {
    if (change.collection === 'attachments') {
      if (change.value) this.setAttachment(change.name, change.value);
      else this.attachments.delete(change.name);
    } else if (change.collection === 'ipam') {
      if (change.value) this.setIpam(change.name, change.value);
      else this.ipam.delete(change.name);
    } else if (change.value) {
      this.setNetwork(change.name, change.value);
    } else {
      this.networks.delete(change.name);
    }
    return parseVniHex(change.name) === undefined ? undefined : change.name;
  }

  /** Every network name etcd mentions for this host (wanted or not). */
  names(): Iterable<string> {
    return new Set([...this.networks.keys(), ...this.attachments.keys(), ...this.ipam.keys()]);
  }

  /** Routers: whether an address lies in a routed network's /64 (a tenant's VM, or the router itself there). */
  inRoutedNetwork(address: bigint): boolean {
    for (const routed of this.ipam.values()) {
      if ('entry' in routed && parseIpv6Prefix(routed.entry.prefix).address === address >> 64n << 64n) return true;
    }
    return false;
  }

  /** Routers: the network's IPAM entry, if it has one (a pure layer-2 network has none). */
  routed(hex: string): RoutedNetwork | undefined {
    return this.ipam.get(hex);
  }

  isWanted(hex: string): boolean {
    return this.networks.has(hex) && (this.scope === 'all' || this.attachments.has(hex));
  }

  wantedCount(): number {
    let count = 0;
    for (const hex of this.networks.keys()) if (this.isWanted(hex)) count++;
    return count;
  }

  /** What `hex` should be on this underlay; a spec error is counted and logged once per revision. */
  wanted(hex: string, underlay: Underlay): Wanted {
    const entry = this.isWanted(hex) && this.ownIdentity !== undefined ? this.networks.get(hex) : undefined;
    if (!entry) return { wanted: false, attachedToMissing: this.scope === 'attached' && this.attachments.has(hex) && !this.networks.has(hex) };
    const attachment = this.scope === 'attached' ? this.attachments.get(hex) : undefined;
    const attachmentError = attachment?.error;
    const result = attachmentError ?? this.desiredFor(parseVniHex(hex)!, entry, underlay, this.ownIdentity!);
    const revision = attachmentError ? attachment!.modRevision : entry.modRevision;
    if (result instanceof SpecError) {
      this.countOnce(`${attachmentError ? 'attachment ' : ''}${hex}@${revision}`, result.code, () =>
        this.log.warn({ vni: hex, key: hex, reason: result.code, op: 'validate' }, `network ${hex}: ${result.message}`),
      );
      return { wanted: true, specRevision: entry.modRevision, error: result };
    }
    return { wanted: true, specRevision: entry.modRevision, network: result };
  }

  /** The spec revision of a wanted network, whatever the underlay. */
  specRevision(hex: string): number | undefined {
    return this.isWanted(hex) ? this.networks.get(hex)?.modRevision : undefined;
  }

  private setIpam(name: string, stored: StoredValue): void {
    if (parseVniHex(name) === undefined) return;
    const parsed = parseIpamEntry(stored.value);
    this.ipam.set(name, parsed.ok ? { revision: stored.modRevision, entry: parsed.value } : { revision: stored.modRevision, problem: `IPAM entry: ${parsed.reason}` });
  }

  private setAttachment(name: string, stored: StoredValue): void {
    const error = parseAttachment(stored.value);
    this.attachments.set(name, { modRevision: stored.modRevision, ...(error ? { error } : {}) });
  }

  private setNetwork(name: string, stored: StoredValue): void {
    if (parseVniHex(name) === undefined) {
      this.countOnce(`${name.slice(0, MAX_KEY_SHOWN)}@${stored.modRevision}`, 'invalid_key', () =>
        this.log.warn(
          { key: cutText(name, MAX_KEY_SHOWN), op: 'validate' },
          `ignoring network key: ${nonCanonicalVniReason(cutText(name, MAX_KEY_SHOWN))}`,
        ),
      );
      return;
    }
    this.networks.set(name, { modRevision: stored.modRevision, createRevision: stored.createRevision, spec: parseNetworkSpec(stored.value) });
  }

  private desiredFor(vni: number, entry: NetworkEntry, underlay: Underlay, identity: string): DesiredNetwork | SpecError {
    if (!entry.spec.ok) return entry.spec.error;
    if (entry.desired?.underlay !== underlay || entry.desired.identity !== identity) {
      let result: DesiredNetwork | SpecError;
      try {
        result = desiredNetwork(vni, entry.spec.spec, this.host, underlay, { identity, incarnation: entry.createRevision });
      } catch (error) {
        if (!(error instanceof SpecError)) throw error;
        result = error;
      }
      entry.desired = { underlay, identity, result };
    }
    return entry.desired.result;
  }

  /** Once per key and revision; the memory of what was counted is bounded (past it, a repeat may be counted again). */
  private countOnce(id: string, reason: string, report: () => void): void {
    if (this.countedErrors.has(id)) return;
    if (this.countedErrors.size >= MAX_COUNTED_ERRORS) this.countedErrors.delete(this.countedErrors.values().next().value!);
    this.countedErrors.add(id);
    this.countSpecError(reason);
    report();
  }
}
