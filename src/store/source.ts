/**
 * Desired state from etcd, ListWatch style: one consistent list at revision R,
 * then a watch from R+1. Any watcher error, disconnect, compaction or lost
 * lease throws the client away: build a new one, list again, watch again.
 * The agent diffs each snapshot against what it has, so deletions made while
 * we were cut off are applied and nothing is ever deleted for lack of data.
 */
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3';
import { quoteBrief } from '../model/spec.js';
import { Backoff, systemClock, type Clock } from './backoff.js';
import { createEtcdClient, DEFAULT_CALL_TIMEOUT_MS, EndpointRotation, type EtcdOptions } from './client.js';
import { ETCD_MAX_REQUEST_BYTES, ETCD_MAX_TXN_OPS, isRequestRefused, readKeysAt, readPrefixes, readPrefixesAt } from './paged-range.js';
import {
  EtcdSchema,
  newDataId,
  parseDataId,
  parseSettings,
  parseStatus,
  serializeDataId,
  serializeLiveness,
  serializeMember,
  serializeStatus,
  type AgentLiveness,
  type NetworkStatus,
} from './schema.js';
import { parseVniHex } from '../model/vni.js';
import { claimRouterNumber, RouterNumberTaken } from './routers.js';

export interface StoredValue {
  value: Buffer;
  modRevision: number;
  /** The revision the key was created at: a key deleted and created again has another. */
  createRevision: number;
}

export interface Snapshot {
  revision: number;
  /** The id of this etcd's data (16 hex digits, see model/identity.ts): part of the agent's identity. */
  etcdCluster: string;
  /** Key suffix after `<prefix>/networks/` → value. */
  networks: Map<string, StoredValue>;
  /** Key suffix after `<prefix>/hosts/<host>/networks/` → value. */
  attachments: Map<string, StoredValue>;
  /** This host's status values, by suffix, as last written. */
  statuses: Map<string, string>;
  /** The cloud-wide group base (`vxnetctl settings`), if one is set: the agent warns when its own differs. */
  cloudGroupBase?: string;
  /**
   * The members index (schema.membersOf) of the networks this agent watches: every network in
   * scope all, the attached ones in scope attached. Network hex → host → value.
   */
  members: Map<string, Map<string, StoredValue>>;
  /** Routers: the IPAM entries (`<prefix>/ipam/<hex>`), by network hex; empty on other hosts. */
  ipam: Map<string, StoredValue>;
  /** Routers: this router's number (schema.routerKey). */
  routerNumber?: number;
}

/** One host's key in a network's members index was written (value) or deleted. */
export interface MemberChange {
  hex: string;
  host: string;
  value?: StoredValue;
  revision: number;
}

export type Collection = 'networks' | 'attachments' | 'ipam';

export interface Change {
  collection: Collection;
  name: string;
  /** undefined for a delete. */
  value?: StoredValue;
  revision: number;
}

/** One status or members write of a transaction: `value` undefined for a delete. */
interface StatusWrite {
  collection: 'status' | 'member';
  name: string;
  pending: { json: string; content: string } | null;
  key: Buffer;
  value?: Buffer;
}

export interface SourceLog {
  debug?(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

/**
 * Where the desired state goes (the agent), by direct calls in the order etcd gave it: a change
 * is applied only after the snapshot before it has been.
 */
export interface DesiredStateSink {
  applySnapshot(snapshot: Snapshot): Promise<void>;
  applyChange(change: Change): void;
  applyMemberChange?(change: MemberChange): void;
  /** The whole members index of one network, from now on watched (a map), or no longer watched (undefined). */
  replaceMembers?(hex: string, members: Map<string, StoredValue> | undefined): void;
}

export interface SourceOptions {
  /** Receives every snapshot and change; the events below are for observers. */
  sink?: DesiredStateSink;
  etcd: EtcdOptions;
  prefix: string;
  hostname: string;
  watchAttachments: boolean;
  /** The liveness value; called at each (re)connect and on refreshLiveness(). */
  liveness: () => AgentLiveness;
  /** Routers (`--role router`) also list and watch the IPAM entries, and claim a router number. */
  router?: { number?: number };
  /** The address this host's members keys publish (see publishMembership); undefined while it has none. */
  memberAddress?: () => string | undefined;
  log: SourceLog;
  clock?: Clock;
  /** TTL of the liveness lease (default 15 s). */
  leaseTtlSeconds?: number;
  /** Delay before reconnecting: first and largest (default 200 ms, doubling up to 10 s). */
  backoff?: { initialMs: number; maxMs: number };
  /** Builds clients; tests may pass their own. */
  createClient?: (options: EtcdOptions) => Etcd3;
}

export interface DesiredStateSourceEvents {
  snapshot: [Snapshot];
  change: [Change];
  connected: [boolean];
}

/**
 * Statuses go to etcd in transactions of up to 128 puts (etcd's default --max-txn-ops): a unary
 * call per key cost ~0.3 ms of CPU each when thousands of networks come up at once.
 */
const STATUS_TXN_OPS = ETCD_MAX_TXN_OPS;
/** Keys and values of one status transaction, well below etcd's --max-request-bytes (1.5 MiB), which also counts the framing. */
const STATUS_TXN_BYTES = ETCD_MAX_REQUEST_BYTES / 1.5;
/**
 * While statuses are coalesced, one that changes less than this long after the last status
 * transaction waits out the rest, with whatever else changes meanwhile. A burst of 1,000
 * networks coming up cost ~175 transactions without it (etcd runs on the same CPUs as the
 * kernel work), ~40 with it.
 */
const STATUS_COALESCE_MS = 100;

export class DesiredStateSource extends EventEmitter<DesiredStateSourceEvents> {
  private readonly clock: Clock;
  private readonly backoff: Backoff;
  private readonly stopping = new AbortController();
  private readonly schema: EtcdSchema;
  private readonly dirs: { networks: string; attachments: string; statuses: string; ipam: string };
  private routerNumber?: number;
  private readonly agentKey: string;
  private readonly endpoints: EndpointRotation;
  /** Passes that failed since the last one that listed (see nextDelay). */
  private failedInARow = 0;
  private roundDelayMs = 0;
  private client?: Etcd3;
  private lease?: Lease;
  private connected = false;
  private delivered: Promise<void> = Promise.resolve();
  private revision = 0;
  private loop?: Promise<void>;
  private stopTimeoutMs = 2000;
  /** Status writes not yet acknowledged: suffix → JSON and its content without the time stamp, or null to delete. */
  private readonly pendingStatus = new Map<string, { json: string; content: string } | null>();
  private readonly writtenStatus = new Map<string, string>();
  /** What etcd refused to store per name (content, or null for a delete): not sent again until it changes. */
  private readonly refusedStatus = new Map<string, string | null>();
  /** Between attempts while etcd cannot take statuses (unreachable, no leader …). */
  private readonly statusBackoff: Backoff;
  private flushing?: Promise<void>;
  private lastStatusTxnAt = -Infinity;
  /** Ends the wait for more statuses early: a full transaction's worth is pending, or coalescing ended. */
  private statusWait?: AbortController;
  private coalescing = false;
  /** Networks whose members index this host should be in (publishMembership). */
  private readonly memberOf = new Set<string>();
  /** This host's keys in the members indexes read and watched: network hex → value as stored. */
  private readonly ownMembers = new Map<string, string>();
  /** Members writes not yet acknowledged: network hex → value, or null to delete. */
  private readonly pendingMembers = new Map<string, string | null>();
  private memberAddressNow?: string;
  /** Scope attached: the networks whose members index this pass has read (and watches). */
  private membersRead = new Set<string>();
  /** The running pass's members watch (scope attached: one watcher per attached network). */
  private memberWatch?: { watching(hex: string): boolean; add(hex: string, attachment: Change): void; remove(hex: string): void };

  constructor(private readonly options: SourceOptions) {
    super();
    this.clock = options.clock ?? systemClock;
    this.backoff = new Backoff(options.backoff?.initialMs, options.backoff?.maxMs);
    this.statusBackoff = new Backoff(options.backoff?.initialMs, options.backoff?.maxMs);
    this.schema = new EtcdSchema(options.prefix);
    this.dirs = {
      networks: this.schema.networksDir,
      attachments: this.schema.attachmentsDir(options.hostname),
      statuses: this.schema.statusesDir(options.hostname),
      ipam: this.schema.ipamDir,
    };
    this.agentKey = this.schema.agentKey(options.hostname);
    this.endpoints = new EndpointRotation(options.etcd.endpoints);
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get watchRevision(): number {
    return this.revision;
  }

  start(): void {
    this.loop ??= this.run();
  }

  /**
   * One client per pass. Whatever a pass made — the client, its lease, its watchers — is retired
   * before the next pass: etcd3 keeps retrying a watcher that nobody cancelled, and a lease that
   * nobody released, on the closed client's pool for ever.
   */
  private async run(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      // One member per pass (see EndpointRotation): a dead one fails the pass at once.
      const endpoint = this.endpoints.current;
      const client = (this.options.createClient ?? createEtcdClient)(this.endpoints.options(this.options.etcd));
      this.client = client;
      const watchers = new Set<Watcher>();
      try {
        const snapshot = await this.list(client);
        if (this.stopping.signal.aborted) continue;
        const lease = await this.grantLiveness(client);
        this.revision = snapshot.revision;
        this.setConnected(true);
        this.backoff.reset();
        this.failedInARow = 0;
        this.options.log.debug?.({ op: 'etcd', revision: snapshot.revision, networks: snapshot.networks.size, attachments: snapshot.attachments.size, endpoint }, 'etcd list');
        this.deliver(() => this.options.sink?.applySnapshot(snapshot));
        this.emit('snapshot', snapshot);
        // What etcd holds of this host's members keys was just read: write what differs.
        for (const hex of new Set([...this.memberOf, ...this.pendingMembers.keys()])) this.queueMember(hex);
        void this.flushStatus();
        const reason = await this.watchUntilBroken(client, lease, snapshot.revision + 1, watchers);
        if (this.stopping.signal.aborted) await this.revokeLiveness(lease);
        else this.options.log.warn({ reason, endpoint }, 'etcd watch broken; listing again');
      } catch (error) {
        this.failedInARow++;
        if (error instanceof RouterNumberTaken) {
          this.options.log.warn({ op: 'router', err: error.message }, `cannot take a router number: ${error.message}`);
        } else if (!this.stopping.signal.aborted) {
          this.options.log.warn({ err: (error as Error).message, endpoint }, 'etcd unavailable; retrying');
        }
      } finally {
        this.setConnected(false);
        this.retire(client, watchers);
      }
      if (this.stopping.signal.aborted) break;
      // Whatever ended the pass, the next one starts on the next member: if this one died, the
      // agent is on a survivor after one backoff step.
      this.endpoints.advance();
      await this.clock.sleep(this.nextDelay(), this.stopping.signal);
    }
  }

  /**
   * The delay before the next pass. It grows once per round of members that all failed, not once
   * per failed pass: with one member dead and another in an election, a backoff doubled by each of
   * them kept the agent asleep for seconds while a third member could serve it.
   */
  private nextDelay(): number {
    if (this.failedInARow === 0) return this.backoff.next();
    if ((this.failedInARow - 1) % this.endpoints.size === 0) this.roundDelayMs = this.backoff.next();
    return this.roundDelayMs;
  }

  private async list(client: Etcd3): Promise<Snapshot> {
    const { dirs, schema } = this;
    const dataId = await this.dataId(client);
    if (this.options.router) this.routerNumber ??= await claimRouterNumber(client, schema, this.options.hostname, this.options.router.number);
    const settings = await client.get(schema.settingsKey).buffer();
    const cloudSettings = settings === null ? undefined : parseSettings(settings);
    // Paged, and all at one revision, so they agree.
    // Scope attached reads only what its networks need: their specs and members, not every network of the cloud.
    const attachedOnly = this.options.watchAttachments;
    const router = this.options.router !== undefined;
    const optional = [...(router ? [dirs.ipam] : []), ...(attachedOnly ? [] : [schema.membersDir])];
    const { revision, kvs } = await readPrefixes(client, [...(attachedOnly ? [] : [dirs.networks]), dirs.attachments, dirs.statuses, ...optional]);
    const everyNetwork = attachedOnly ? [] : kvs.shift()!;
    const [attachments, statuses] = [kvs.shift()!, kvs.shift()!];
    const ipam = router ? kvs.shift()! : [];
    const everyMember = attachedOnly ? [] : kvs.shift()!;
    const watchedMembers = attachedOnly ? [...new Set(attachments.map((kv) => schema.nameIn(dirs.attachments, kv.key.toString('utf8'))))].filter((hex) => parseVniHex(hex) !== undefined) : [];
    const memberKvs = attachedOnly ? (await readPrefixesAt(client, watchedMembers.map((hex) => schema.membersOf(hex)), revision)).flat() : everyMember;
    const networks = attachedOnly ? await readKeysAt(client, watchedMembers.map((hex) => schema.networkKey(hex)), revision) : everyNetwork;
    const byName = (kvs: IKeyValue[], dir: string) =>
      new Map(
        kvs.map((kv) => [
          schema.nameIn(dir, kv.key.toString('utf8')),
          { value: kv.value, modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision) },
        ]),
      );
    const snapshot: Snapshot = {
      revision,
      etcdCluster: dataId,
      networks: byName(networks, dirs.networks),
      attachments: byName(attachments, dirs.attachments),
      statuses: new Map(statuses.map((kv) => [schema.nameIn(dirs.statuses, kv.key.toString('utf8')), kv.value.toString('utf8')])),
      ...(cloudSettings?.ok && cloudSettings.value.groupBase ? { cloudGroupBase: cloudSettings.value.groupBase } : {}),
      members: new Map(watchedMembers.map((hex) => [hex, new Map()])),
      ipam: byName(ipam, dirs.ipam),
      ...(this.routerNumber !== undefined ? { routerNumber: this.routerNumber } : {}),
    };
    this.ownMembers.clear();
    this.membersRead = new Set(watchedMembers);
    for (const kv of memberKvs) {
      const parsed = schema.parseKey(kv.key.toString('utf8'));
      if (parsed.kind !== 'member') continue;
      let hosts = snapshot.members.get(parsed.hex);
      if (!hosts) snapshot.members.set(parsed.hex, (hosts = new Map()));
      hosts.set(parsed.host, { value: kv.value, modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision) });
      if (parsed.host === this.options.hostname) this.ownMembers.set(parsed.hex, kv.value.toString('utf8'));
    }
    this.writtenStatus.clear();
    this.refusedStatus.clear();
    for (const [name, value] of snapshot.statuses) this.writtenStatus.set(name, contentOfJson(value));
    return snapshot;
  }

  /** This etcd's data id (schema.dataIdKey), made here if nobody has yet: create-if-absent, so concurrent agents agree. */
  private async dataId(client: Etcd3): Promise<string> {
    const key = this.schema.dataIdKey;
    const existing = await client.get(key).buffer();
    if (existing === null) {
      await client.if(key, 'Create', '==', 0).then(client.put(key).value(serializeDataId(newDataId(randomBytes)))).commit();
    }
    const value = existing ?? (await client.get(key).buffer());
    const parsed = value === null ? undefined : parseDataId(value);
    if (!parsed?.ok) throw new Error(`${key}: ${parsed?.reason ?? 'missing after it was written'}; fix or delete the key`);
    return parsed.value;
  }

  /**
   * Resolves with a reason when the watch can no longer be trusted. Every watcher made is added to
   * `watchers` at once, so that it is cancelled however the watch ends.
   */
  private watchUntilBroken(client: Etcd3, lease: Lease, fromRevision: number, watchers: Set<Watcher>): Promise<string> {
    // Scope attached watches each attached network's spec on its own (with its members), not the networks' directory.
    const collections: Array<[Collection, string]> = this.options.watchAttachments ? [['attachments', this.dirs.attachments]] : [['networks', this.dirs.networks]];
    if (this.options.router) collections.push(['ipam', this.dirs.ipam]);
    return new Promise<string>((resolve) => {
      let settled = false;
      const confirming = new AbortController();
      const broken = (reason: string) => {
        if (settled) return;
        settled = true;
        confirming.abort();
        this.stopping.signal.removeEventListener('abort', onStop);
        lease.off('lost', onLost);
        this.memberWatch = undefined;
        resolve(reason);
      };
      const onStop = () => broken('stopping');
      const onLost = (error: Error) => broken(`liveness lease lost: ${error.message}`);
      if (this.stopping.signal.aborted) return onStop();
      this.stopping.signal.addEventListener('abort', onStop, { once: true });
      lease.on('lost', onLost);
      /** Watches the keys under `dir`, or (`exact`) the one key `dir`. */
      const watch = (dir: string, from: number, onEvent: (kv: IKeyValue, isPut: boolean) => void, exact = false): Watcher => {
        // watcher(), not create(): create() never settles when the stream drops before etcd
        // confirms the watch, and a watcher we never got could never be cancelled.
        const builder = exact ? client.watch().key(dir) : client.watch().prefix(dir);
        const watcher = builder.startRevision(String(from)).watcher();
        watchers.add(watcher);
        // After 'error' and 'end' etcd3 has dropped the watcher itself: cancelling it again would wait for ever.
        const gone = (reason: string) => {
          watchers.delete(watcher);
          broken(reason);
        };
        watcher.on('error', (error: Error) => gone(`watch error: ${error.message}`));
        watcher.on('end', () => gone('watch ended'));
        // With the require-leader flag, etcd ends the stream of a member that lost its leader ("no leader").
        watcher.on('disconnected', (error?: Error) => broken(`disconnected from etcd${error?.message ? `: ${error.message}` : ''}`));
        watcher.on('put', (kv: IKeyValue) => settled || onEvent(kv, true));
        watcher.on('delete', (kv: IKeyValue) => settled || onEvent(kv, false));
        return watcher;
      };
      // etcd confirms a watch at once (it gets an id). A stream that a member accepted but never
      // answers would otherwise leave the agent "connected" to a watch that delivers nothing,
      // with no error to end it: it gets as long as any call.
      const checkConfirmed = () => {
        const unconfirmed = () => [...watchers].some((watcher) => watcher.id === null);
        if (settled || !unconfirmed()) return;
        const timeoutMs = this.options.etcd.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
        void this.clock.sleep(timeoutMs, confirming.signal).then(() => {
          if (!settled && unconfirmed()) broken(`etcd did not confirm the watch within ${timeoutMs} ms`);
        });
      };
      const onMember = (kv: IKeyValue, isPut: boolean) => this.onMemberEvent(kv, isPut);
      for (const [collection, dir] of collections) watch(dir, fromRevision, (kv, isPut) => this.onEvent(collection, dir, kv, isPut));
      if (!this.options.watchAttachments) {
        watch(this.schema.membersDir, fromRevision, onMember);
        return checkConfirmed();
      }
      // Scope attached: each attached network's spec and members only, watched from when it was attached.
      const perNetwork = new Map<string, Watcher[] | 'reading'>();
      const watchNetwork = (hex: string, from: number) => {
        const spec = watch(this.schema.networkKey(hex), from, (kv, isPut) => this.onEvent('networks', this.dirs.networks, kv, isPut), true);
        perNetwork.set(hex, [spec, watch(this.schema.membersOf(hex), from, onMember)]);
      };
      /** A network attached while watching: its spec and members read at the attachment's revision, delivered with it, in order. */
      const add = (hex: string, attachment: Change) => {
        perNetwork.set(hex, 'reading');
        const dir = this.schema.membersOf(hex);
        Promise.all([readKeysAt(client, [this.schema.networkKey(hex)], attachment.revision), readPrefixesAt(client, [dir], attachment.revision)]).then(
          ([[spec], [kvs]]) => {
            if (settled || perNetwork.get(hex) !== 'reading') return;
            const members = new Map<string, StoredValue>();
            for (const kv of kvs!) {
              const host = this.schema.nameIn(dir, kv.key.toString('utf8'));
              members.set(host, { value: kv.value, modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision) });
              if (host === this.options.hostname) this.ownMembers.set(hex, kv.value.toString('utf8'));
            }
            this.membersRead.add(hex);
            const network: Change = {
              collection: 'networks',
              name: hex,
              revision: attachment.revision,
              ...(spec ? { value: { value: spec.value, modRevision: Number(spec.mod_revision), createRevision: Number(spec.create_revision) } } : {}),
            };
            // Spec and members first: an attachment alone would read as "attached to a missing network".
            this.deliver(() => this.options.sink?.replaceMembers?.(hex, members));
            this.deliver(() => this.options.sink?.applyChange(network));
            this.deliver(() => this.options.sink?.applyChange(attachment));
            this.emit('change', network);
            this.emit('change', attachment);
            watchNetwork(hex, attachment.revision + 1);
            this.queueMember(hex);
            void this.flushStatus();
          },
          (error: Error) => broken(`reading network ${hex} at its attachment: ${error.message}`),
        );
      };
      this.memberWatch = {
        watching: (hex) => perNetwork.has(hex),
        add,
        remove: (hex) => {
          const watched = perNetwork.get(hex);
          if (watched === undefined) return;
          perNetwork.delete(hex);
          this.membersRead.delete(hex);
          this.ownMembers.delete(hex);
          if (watched !== 'reading') {
            for (const watcher of watched) {
              watchers.delete(watcher);
              for (const event of ['put', 'delete', 'disconnected', 'end'] as const) watcher.removeAllListeners(event);
              void watcher.cancel().catch(() => undefined);
            }
          }
          // Not watched any more: nothing this host knows of it may go stale in its desired state.
          this.deliver(() => this.options.sink?.replaceMembers?.(hex, undefined));
          this.deliver(() => this.options.sink?.applyChange({ collection: 'networks', name: hex, revision: this.revision }));
        },
      };
      for (const hex of this.membersRead) watchNetwork(hex, fromRevision);
      checkConfirmed();
    });
  }

  private onMemberEvent(kv: IKeyValue, isPut: boolean): void {
    const revision = Number(kv.mod_revision);
    if (revision > this.revision) this.revision = revision;
    const parsed = this.schema.parseKey(kv.key.toString('utf8'));
    if (parsed.kind !== 'member') return;
    const change: MemberChange = {
      hex: parsed.hex,
      host: parsed.host,
      revision,
      ...(isPut ? { value: { value: kv.value, modRevision: revision, createRevision: Number(kv.create_revision) } } : {}),
    };
    if (parsed.host === this.options.hostname) {
      // Ours, changed by someone else (`vxnetctl host remove`, a hand edit): written again if still a member.
      if (isPut) this.ownMembers.set(parsed.hex, kv.value.toString('utf8'));
      else this.ownMembers.delete(parsed.hex);
      if (this.memberOf.has(parsed.hex)) {
        this.queueMember(parsed.hex);
        void this.flushStatus();
      }
    }
    this.deliver(() => this.options.sink?.applyMemberChange?.(change));
  }

  /**
   * Whether this host carries network `hex` (wanted here, devices or not): its key in the members
   * index is written (with the current member address) or deleted to match, batched with statuses.
   */
  publishMembership(hex: string, member: boolean): void {
    if (member === this.memberOf.has(hex) && !this.pendingMembers.has(hex) && (member ? this.ownMembers.has(hex) : !this.ownMembers.has(hex))) return;
    if (member) this.memberOf.add(hex);
    else this.memberOf.delete(hex);
    this.queueMember(hex);
    void this.flushStatus();
  }

  /** Looks up the member address again; every members key of this host is rewritten when it changed. */
  checkMemberAddress(): void {
    const address = this.options.memberAddress?.();
    if (address === this.memberAddressNow) return;
    this.memberAddressNow = address;
    if (address !== undefined) this.options.log.info({ op: 'members', address }, `publishing ${address} as this host's address in the members index`);
    for (const hex of this.memberOf) this.queueMember(hex);
    void this.flushStatus();
  }

  private queueMember(hex: string): void {
    this.memberAddressNow ??= this.options.memberAddress?.();
    const address = this.memberAddressNow;
    if (this.memberOf.has(hex)) {
      // Without an address nothing can be published yet; checkMemberAddress() comes back to it.
      const json = address === undefined ? undefined : serializeMember({ address });
      if (json === undefined || this.ownMembers.get(hex) === json) this.pendingMembers.delete(hex);
      else this.pendingMembers.set(hex, json);
    } else if (this.ownMembers.has(hex) || !this.membersKnown(hex)) {
      this.pendingMembers.set(hex, null);
    } else {
      this.pendingMembers.delete(hex);
    }
  }

  /** Whether ownMembers is what etcd holds for this network: read in this pass, or (scope all) every network was. */
  private membersKnown(hex: string): boolean {
    return !this.options.watchAttachments || this.membersRead.has(hex);
  }

  private onEvent(collection: Collection, dir: string, kv: IKeyValue, isPut: boolean): void {
    const revision = Number(kv.mod_revision);
    if (revision > this.revision) this.revision = revision;
    const change: Change = {
      collection,
      name: this.schema.nameIn(dir, kv.key.toString('utf8')),
      revision,
      ...(isPut ? { value: { value: kv.value, modRevision: revision, createRevision: Number(kv.create_revision) } } : {}),
    };
    // When a change reached the agent (as for a list, above), apart from when the kernel applied
    // it: on a busy host the kernel alone can take seconds (the RTNL lock held by others).
    this.options.log.debug?.({ op: 'etcd', collection, vni: change.name, revision, deleted: !isPut }, 'etcd change');
    const watch = this.memberWatch;
    if (collection === 'attachments' && watch && parseVniHex(change.name) !== undefined) {
      // Delivered once the network's spec and members are read (see add()).
      if (isPut && !watch.watching(change.name)) return watch.add(change.name, change);
      if (!isPut) {
        this.deliver(() => this.options.sink?.applyChange(change));
        this.emit('change', change);
        return watch.remove(change.name);
      }
    }
    this.deliver(() => this.options.sink?.applyChange(change));
    this.emit('change', change);
  }

  /** Snapshots and changes reach the sink in arrival order, each after the one before has been applied. */
  private deliver(apply: () => void | Promise<void>): void {
    this.delivered = this.delivered.then(apply).catch((error: Error) => this.options.log.warn({ err: error.message }, 'applying the desired state failed'));
  }

  private async grantLiveness(client: Etcd3): Promise<Lease> {
    const lease = client.lease(this.options.leaseTtlSeconds ?? 15, { autoKeepAlive: true });
    // Held before the put, so that a failed put still releases it.
    this.lease = lease;
    lease.on('lost', () => undefined);
    await lease.put(this.agentKey).value(serializeLiveness(this.options.liveness())).exec();
    return lease;
  }

  private async revokeLiveness(lease: Lease): Promise<void> {
    await Promise.race([lease.revoke().catch(() => undefined), this.clock.sleep(this.stopTimeoutMs)]);
  }

  /** Rewrites the liveness value (e.g. when readiness changes), if connected. */
  async refreshLiveness(): Promise<void> {
    if (!this.connected || !this.lease) return;
    try {
      await this.lease.put(this.agentKey).value(serializeLiveness(this.options.liveness())).exec();
    } catch (error) {
      this.options.log.warn({ err: (error as Error).message }, 'cannot update liveness key');
    }
  }

  /** Queues a status write; identical content (ignoring updatedAt) is not written twice. */
  writeStatus(name: string, status: NetworkStatus | null): void {
    const pending = status === null ? null : { json: serializeStatus(status), content: contentOf(status) };
    const written = this.writtenStatus.get(name);
    const refused = this.refusedStatus.has(name) && this.refusedStatus.get(name) === (pending?.content ?? null);
    if (refused || (pending === null ? written === undefined : written === pending.content)) {
      this.pendingStatus.delete(name);
      return;
    }
    this.pendingStatus.set(name, pending);
    if (this.pendingStatus.size >= STATUS_TXN_OPS) this.statusWait?.abort();
    void this.flushStatus();
  }

  /**
   * While many networks change at once (the agent's bulk applies), statuses are written at most
   * every STATUS_COALESCE_MS; otherwise, and as soon as this is turned off, at once.
   */
  coalesceStatusWrites(on: boolean): void {
    this.coalescing = on;
    if (!on) this.statusWait?.abort();
  }

  private flushStatus(): Promise<void> {
    this.flushing ??= this.flushLoop().finally(() => {
      this.flushing = undefined;
      // A write queued after the loop's last check but before this callback would wait for the next one.
      if (this.hasPendingWrites() && this.connected && this.client && !this.stopping.signal.aborted) void this.flushStatus();
    });
    return this.flushing;
  }

  private hasPendingWrites(): boolean {
    return this.pendingStatus.size > 0 || this.pendingMembers.size > 0;
  }

  private async flushLoop(): Promise<void> {
    while (this.hasPendingWrites() && this.connected && this.client) {
      const wait = this.lastStatusTxnAt + STATUS_COALESCE_MS - this.clock.now();
      if (this.coalescing && wait > 0 && this.pendingStatus.size < STATUS_TXN_OPS) {
        this.statusWait = new AbortController();
        await this.clock.sleep(wait, AbortSignal.any([this.stopping.signal, this.statusWait.signal]));
        this.statusWait = undefined;
        if (this.stopping.signal.aborted || !this.client || !this.connected) return;
      }
      this.lastStatusTxnAt = this.clock.now();
      try {
        await this.writeStatusBatch(this.client, this.nextStatusBatch());
        this.statusBackoff.reset();
      } catch (error) {
        // etcd could not take them now: they stay pending. A reconnect restarts this loop too.
        const delayMs = this.statusBackoff.next();
        this.options.log.warn({ err: (error as Error).message, pending: this.pendingStatus.size, retryInMs: delayMs }, 'cannot write statuses; retrying');
        await this.clock.sleep(delayMs, this.stopping.signal);
        if (this.stopping.signal.aborted) return;
      }
    }
  }

  /** The oldest pending statuses and members writes, as many as one transaction may carry by operations and by bytes (at least one). */
  private nextStatusBatch(): StatusWrite[] {
    const batch: StatusWrite[] = [];
    let bytes = 0;
    const take = (write: StatusWrite) => {
      const size = write.key.length + (write.value?.length ?? 0);
      if (batch.length === STATUS_TXN_OPS || (batch.length > 0 && bytes + size > STATUS_TXN_BYTES)) return false;
      batch.push(write);
      bytes += size;
      return true;
    };
    const host = this.options.hostname;
    for (const [name, pending] of this.pendingStatus) {
      const value = pending === null ? undefined : Buffer.from(pending.json);
      if (!take({ collection: 'status', name, pending, key: Buffer.from(this.schema.statusKey(host, name)), value })) return batch;
    }
    for (const [name, json] of this.pendingMembers) {
      const value = json === null ? undefined : Buffer.from(json);
      if (!take({ collection: 'member', name, pending: json === null ? null : { json, content: json }, key: Buffer.from(this.schema.memberKey(name, host)), value })) return batch;
    }
    return batch;
  }

  /**
   * One transaction; if etcd refuses it as such (too large, say), each half on its own, down to
   * single statuses: one that is still refused is logged and dropped, so it never holds back the
   * others. Throws when etcd could not take the transaction at all; what was written stays written.
   */
  private async writeStatusBatch(client: Etcd3, batch: StatusWrite[]): Promise<void> {
    const success = batch.map(({ key, value }) => (value === undefined ? { request_delete_range: { key } } : { request_put: { key, value } }));
    try {
      await client.kv.txn({ compare: [], success, failure: [] });
    } catch (error) {
      if (!isRequestRefused(error)) throw error;
      if (batch.length === 1) return this.dropRefusedStatus(batch[0]!, error as Error);
      const half = Math.ceil(batch.length / 2);
      await this.writeStatusBatch(client, batch.slice(0, half));
      await this.writeStatusBatch(client, batch.slice(half));
      return;
    }
    for (const { collection, name, pending } of batch) {
      if (collection === 'member') {
        if ((this.pendingMembers.get(name) ?? null) === (pending?.json ?? null)) this.pendingMembers.delete(name);
        if (pending === null) this.ownMembers.delete(name);
        else this.ownMembers.set(name, pending.json);
        continue;
      }
      if (this.pendingStatus.get(name) === pending) this.pendingStatus.delete(name);
      this.refusedStatus.delete(name);
      if (pending === null) this.writtenStatus.delete(name);
      else this.writtenStatus.set(name, pending.content);
    }
  }

  private dropRefusedStatus({ collection, name, pending, key, value }: StatusWrite, error: Error): void {
    if (collection === 'member') {
      this.pendingMembers.delete(name);
      this.options.log.warn({ vni: name, key: key.toString('utf8'), err: quoteBrief(error.message, 200) }, `etcd refused this host's members key of network ${name}`);
      return;
    }
    if (this.pendingStatus.get(name) === pending) this.pendingStatus.delete(name);
    this.refusedStatus.set(name, pending?.content ?? null);
    const reason = pending === null ? undefined : parseStatus(value!);
    this.options.log.warn(
      {
        vni: name,
        key: key.toString('utf8'),
        bytes: value?.length ?? 0,
        ...(reason?.ok && reason.value.reason !== undefined ? { reason: quoteBrief(reason.value.reason, 200) } : {}),
        err: quoteBrief(error.message, 200),
      },
      `etcd refused the status of network ${name}; dropped until it changes`,
    );
  }

  private setConnected(connected: boolean): void {
    if (this.connected === connected) return;
    this.connected = connected;
    this.emit('connected', connected);
  }

  /** Cancels the pass's watchers (without our listeners), releases its lease and closes its client. */
  private retire(client: Etcd3, watchers: Set<Watcher>): void {
    for (const watcher of watchers) {
      // Before cancel(), which waits for 'end' itself; 'error' keeps a listener so a late one cannot throw.
      for (const event of ['put', 'delete', 'disconnected', 'end'] as const) watcher.removeAllListeners(event);
      void watcher.cancel().catch(() => undefined);
    }
    this.lease?.release();
    this.lease = undefined;
    try {
      client.close();
    } catch {
      // Closing a broken client may throw; it is being thrown away anyway.
    }
  }

  /** Stops watching and revokes the liveness lease (devices are left alone). */
  async stop(timeoutMs = 2000): Promise<void> {
    this.stopTimeoutMs = timeoutMs;
    this.stopping.abort();
    await Promise.race([this.loop, this.clock.sleep(timeoutMs)]);
  }
}

/** A status without its time stamp, to tell a real change from a rewrite. */
function contentOf(status: NetworkStatus): string {
  return serializeStatus({ ...status, updatedAt: '' });
}

function contentOfJson(json: string): string {
  const parsed = parseStatus(Buffer.from(json));
  return parsed.ok ? contentOf(parsed.value) : json;
}
