/**
 * Desired state from etcd, ListWatch style: one consistent list at revision R,
 * then a watch from R+1. Any watcher error, disconnect, compaction or lost
 * lease throws the client away: build a new one, list again, watch again.
 * The agent diffs each snapshot against what it has, so deletions made while
 * we were cut off are applied and nothing is ever deleted for lack of data.
 */
import { EventEmitter } from 'node:events';
import type { Etcd3, IKeyValue, Lease, Watcher } from 'etcd3';
import { Backoff, systemClock, type Clock } from './backoff.js';
import { createEtcdClient, type EtcdOptions } from './client.js';

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
}

export type Collection = 'networks' | 'attachments';

export interface Change {
  collection: Collection;
  name: string;
  /** undefined for a delete. */
  value?: StoredValue;
  revision: number;
}

export interface SourceLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export interface SourceOptions {
  etcd: EtcdOptions;
  prefix: string;
  hostname: string;
  watchAttachments: boolean;
  /** The liveness value; called at each (re)connect and on refreshLiveness(). */
  liveness: () => Record<string, unknown>;
  log: SourceLog;
  clock?: Clock;
  leaseTtlSeconds?: number;
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
const STATUS_TXN_OPS = 128;
/**
 * While statuses are coalesced, one that changes less than this long after the last status
 * transaction waits out the rest, with whatever else changes meanwhile. A burst of 1,000
 * networks coming up cost ~175 transactions without it (etcd runs on the same CPUs as the
 * kernel work), ~40 with it.
 */
const STATUS_COALESCE_MS = 100;

export class DesiredStateSource extends EventEmitter<DesiredStateSourceEvents> {
  private readonly clock: Clock;
  private readonly backoff = new Backoff();
  private readonly stopping = new AbortController();
  private client?: Etcd3;
  private lease?: Lease;
  private connected = false;
  private revision = 0;
  private loop?: Promise<void>;
  /** Status writes not yet acknowledged: suffix → JSON and its content without the time stamp, or null to delete. */
  private readonly pendingStatus = new Map<string, { json: string; content: string } | null>();
  private readonly writtenStatus = new Map<string, string>();
  private flushing?: Promise<void>;
  private lastStatusTxnAt = -Infinity;
  /** Ends the wait for more statuses early: a full transaction's worth is pending, or coalescing ended. */
  private statusWait?: AbortController;
  private coalescing = false;

  constructor(private readonly options: SourceOptions) {
    super();
    this.clock = options.clock ?? systemClock;
  }

  get isConnected(): boolean {
    return this.connected;
  }

  get watchRevision(): number {
    return this.revision;
  }

  private get keys() {
    const { prefix, hostname } = this.options;
    return {
      networks: `${prefix}/networks/`,
      attachments: `${prefix}/hosts/${hostname}/networks/`,
      statuses: `${prefix}/hosts/${hostname}/status/`,
      agent: `${prefix}/hosts/${hostname}/agent`,
    };
  }

  start(): void {
    this.loop ??= this.run();
  }

  private async run(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      const client = (this.options.createClient ?? createEtcdClient)(this.options.etcd);
      this.client = client;
      try {
        const snapshot = await this.list(client);
        if (this.stopping.signal.aborted) break;
        await this.grantLiveness(client);
        this.revision = snapshot.revision;
        this.setConnected(true);
        this.backoff.reset();
        this.emit('snapshot', snapshot);
        void this.flushStatus();
        const reason = await this.watchUntilBroken(client, snapshot.revision + 1);
        if (!this.stopping.signal.aborted) this.options.log.warn({ reason }, 'etcd watch broken; listing again');
      } catch (error) {
        if (!this.stopping.signal.aborted) {
          this.options.log.warn({ err: (error as Error).message, endpoints: this.options.etcd.endpoints }, 'etcd unavailable; retrying');
        }
      }
      this.setConnected(false);
      if (this.stopping.signal.aborted) break;
      this.discardClient(client);
      await this.clock.sleep(this.backoff.next(), this.stopping.signal);
    }
  }

  private async list(client: Etcd3): Promise<Snapshot> {
    const keys = this.keys;
    const networks = await client.getAll().prefix(keys.networks).exec();
    const revision = Number(networks.header.revision);
    // Attachments and statuses at the same revision, so the three agree.
    const [attachments, statuses] = await Promise.all([
      client.getAll().prefix(keys.attachments).revision(revision).exec(),
      client.getAll().prefix(keys.statuses).revision(revision).exec(),
    ]);
    const bySuffix = (kvs: IKeyValue[], prefix: string) =>
      new Map(
        kvs.map((kv) => [kv.key.toString('utf8').slice(prefix.length), { value: kv.value, modRevision: Number(kv.mod_revision), createRevision: Number(kv.create_revision) }]),
      );
    const snapshot: Snapshot = {
      revision,
      etcdCluster: BigInt(networks.header.cluster_id).toString(16).padStart(16, '0'),
      networks: bySuffix(networks.kvs, keys.networks),
      attachments: bySuffix(attachments.kvs, keys.attachments),
      statuses: new Map(statuses.kvs.map((kv) => [kv.key.toString('utf8').slice(keys.statuses.length), kv.value.toString('utf8')])),
    };
    this.writtenStatus.clear();
    for (const [name, value] of snapshot.statuses) this.writtenStatus.set(name, contentOfJson(value));
    return snapshot;
  }

  /** Resolves with a reason when the watch can no longer be trusted. */
  private async watchUntilBroken(client: Etcd3, fromRevision: number): Promise<string> {
    const keys = this.keys;
    const collections: Array<[Collection, string]> = [['networks', keys.networks]];
    if (this.options.watchAttachments) collections.push(['attachments', keys.attachments]);
    const watchers: Watcher[] = [];
    return new Promise<string>((resolve) => {
      let settled = false;
      const broken = (reason: string) => {
        if (settled) return;
        settled = true;
        this.stopping.signal.removeEventListener('abort', onStop);
        for (const watcher of watchers) watcher.removeAllListeners();
        resolve(reason);
      };
      const onStop = () => broken('stopping');
      this.stopping.signal.addEventListener('abort', onStop, { once: true });
      this.lease?.once('lost', (error) => broken(`liveness lease lost: ${error.message}`));
      for (const [collection, prefix] of collections) {
        client
          .watch()
          .prefix(prefix)
          .startRevision(String(fromRevision))
          .create()
          .then((watcher) => {
            watchers.push(watcher);
            if (settled) return void watcher.cancel().catch(() => undefined);
            watcher.on('error', (error) => broken(`watch error: ${error.message}`));
            watcher.on('disconnected', () => broken('disconnected from etcd'));
            watcher.on('end', () => broken('watch ended'));
            watcher.on('put', (kv) => this.onEvent(collection, prefix, kv, true));
            watcher.on('delete', (kv) => this.onEvent(collection, prefix, kv, false));
          })
          .catch((error: Error) => broken(`cannot watch ${prefix}: ${error.message}`));
      }
    });
  }

  private onEvent(collection: Collection, prefix: string, kv: IKeyValue, isPut: boolean): void {
    const revision = Number(kv.mod_revision);
    if (revision > this.revision) this.revision = revision;
    const name = kv.key.toString('utf8').slice(prefix.length);
    this.emit('change', {
      collection,
      name,
      revision,
      ...(isPut ? { value: { value: kv.value, modRevision: revision, createRevision: Number(kv.create_revision) } } : {}),
    });
  }

  private async grantLiveness(client: Etcd3): Promise<void> {
    const lease = client.lease(this.options.leaseTtlSeconds ?? 15, { autoKeepAlive: true });
    lease.on('lost', () => undefined);
    await lease.put(this.keys.agent).value(JSON.stringify(this.options.liveness())).exec();
    this.lease = lease;
  }

  /** Rewrites the liveness value (e.g. when readiness changes), if connected. */
  async refreshLiveness(): Promise<void> {
    if (!this.connected || !this.lease) return;
    try {
      await this.lease.put(this.keys.agent).value(JSON.stringify(this.options.liveness())).exec();
    } catch (error) {
      this.options.log.warn({ err: (error as Error).message }, 'cannot update liveness key');
    }
  }

  /** Queues a status write; identical content (ignoring updatedAt) is not written twice. */
  writeStatus(name: string, status: Record<string, unknown> | null): void {
    const pending = status === null ? null : { json: JSON.stringify(status), content: contentOf(status) };
    const written = this.writtenStatus.get(name);
    if (pending === null ? written === undefined : written === pending.content) {
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
    this.flushing ??= this.flushLoop().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async flushLoop(): Promise<void> {
    while (this.pendingStatus.size && this.connected && this.client) {
      const wait = this.lastStatusTxnAt + STATUS_COALESCE_MS - this.clock.now();
      if (this.coalescing && wait > 0 && this.pendingStatus.size < STATUS_TXN_OPS) {
        this.statusWait = new AbortController();
        await this.clock.sleep(wait, AbortSignal.any([this.stopping.signal, this.statusWait.signal]));
        this.statusWait = undefined;
        if (this.stopping.signal.aborted || !this.client || !this.connected) return;
      }
      const batch = [...this.pendingStatus].slice(0, STATUS_TXN_OPS);
      const success = batch.map(([name, pending]) => {
        const key = Buffer.from(this.keys.statuses + name);
        return pending === null ? { request_delete_range: { key } } : { request_put: { key, value: Buffer.from(pending.json) } };
      });
      this.lastStatusTxnAt = this.clock.now();
      try {
        await this.client.kv.txn({ compare: [], success, failure: [] });
      } catch {
        // The next (re)connect flushes what is left.
        return;
      }
      for (const [name, pending] of batch) {
        if (this.pendingStatus.get(name) === pending) this.pendingStatus.delete(name);
        if (pending === null) this.writtenStatus.delete(name);
        else this.writtenStatus.set(name, pending.content);
      }
    }
  }

  private setConnected(connected: boolean): void {
    if (this.connected === connected) return;
    this.connected = connected;
    this.emit('connected', connected);
  }

  private discardClient(client: Etcd3): void {
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
    this.stopping.abort();
    const lease = this.lease;
    if (lease && this.connected) {
      await Promise.race([lease.revoke().catch(() => undefined), this.clock.sleep(timeoutMs)]);
    }
    this.lease = undefined;
    this.client?.close();
    await Promise.race([this.loop, this.clock.sleep(timeoutMs)]);
  }
}

/** A status without its time stamp, to tell a real change from a rewrite. */
function contentOf(status: Record<string, unknown>): string {
  // JSON.stringify leaves out undefined members; the others keep their order.
  return JSON.stringify({ ...status, updatedAt: undefined });
}

function contentOfJson(json: string): string {
  try {
    return contentOf(JSON.parse(json) as Record<string, unknown>);
  } catch {
    return json;
  }
}
