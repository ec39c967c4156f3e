/**
 * IPAM in etcd (DESIGN.md §8), as used by vxnetctl: the cloud-wide pool, one /64 per routed network
 * allocated in one transaction, and whether the routers serve it yet. Keys and values are described
 * in store/schema.ts; a network without an entry is a pure layer-2 network and nothing here
 * touches it.
 */
import type { Etcd3, IKeyValue } from 'etcd3';
import { ipamAvailability, type Availability, type RouterReport } from '../model/ipam-availability.js';
import {
  lowestFreeSubnet,
  parsePool,
  parseSubnet,
  prefixContains,
  subnetFromNumber,
  subnetNumber,
  type Ipv6Prefix,
} from '../model/ipv6-prefix.js';
import { vniHex } from '../model/vni.js';
import { addIpamGuard, readStoredIpam, type TxnWrite } from './ipam-records.js';
import { ConflictError, NotFoundError, readStatus, RefusedError, type InvalidEntry } from './networks.js';
import { prefixEnd, readPrefixes } from './paged-range.js';
import {
  parseIpamEntry,
  parseIpamIndex,
  parseIpamPool,
  serializeIpamEntry,
  serializeIpamIndex,
  serializeIpamPool,
  type EtcdSchema,
  type IpamEntry,
} from './schema.js';

/** An IPAM entry as stored: its network and the etcd mod_revision routers report back. */
export interface IpamRecord {
  vni: number;
  hex: string;
  entry: IpamEntry;
  revision: number;
}

/** `ipam wait` ran out of time: the routers named have not reported the current entry. */
export class NotAvailableError extends Error {
  override name = 'NotAvailableError';
}

// Each failed attempt means another writer changed what we read (most often: took the /64 we
// chose), so this bounds how many concurrent creators one create outlasts.
const MAX_ATTEMPTS = 100;

// ---- the pool ----

export interface StoredPool {
  pool: Ipv6Prefix;
  kv: IKeyValue;
}

async function readKey(client: Etcd3, key: string): Promise<IKeyValue | undefined> {
  return (await client.get(key).exec()).kvs[0];
}

async function readStoredPool(client: Etcd3, schema: EtcdSchema): Promise<StoredPool | undefined> {
  const kv = await readKey(client, schema.ipamPoolKey);
  if (!kv) return undefined;
  const parsed = parseIpamPool(kv.value);
  if (!parsed.ok) throw new ConflictError(`${schema.ipamPoolKey} is invalid: ${parsed.reason}; fix it with vxnetctl ipam pool set`);
  return { pool: parsePool(parsed.value.prefix), kv };
}

/** The pool, or undefined while none is set. */
export async function readIpamPool(client: Etcd3, schema: EtcdSchema): Promise<Ipv6Prefix | undefined> {
  return (await readStoredPool(client, schema))?.pool;
}

/**
 * Sets the pool, refused if a /64 already allocated would lie outside it. The transaction holds
 * only if no IPAM entry or index key was written since they were read (a comparison over each
 * directory's whole range), so a create racing with a pool change either sees the new pool or
 * makes the change read again; creates themselves compare only the pool key and never wait for
 * each other on it.
 */
export async function setIpamPool(client: Etcd3, schema: EtcdSchema, pool: Ipv6Prefix): Promise<{ pool: string; previous?: string }> {
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const stored = await readKey(client, schema.ipamPoolKey);
    const previousParsed = stored ? parseIpamPool(stored.value) : undefined;
    const snapshot = await readAllocations(client, schema);
    const outside = [...snapshot.allocated.entries()]
      .filter(([number]) => !prefixContains(pool, subnetFromNumber(number)))
      .map(([number, holder]) => `${subnetFromNumber(number).text} (network ${holder})`);
    if (outside.length > 0) {
      throw new RefusedError(
        `${outside.length} allocated prefix${outside.length === 1 ? '' : 'es'} would lie outside ${pool.text}: ${outside.slice(0, 5).join(', ')}` +
          `${outside.length > 5 ? ', …' : ''}; choose a pool that contains ${outside.length === 1 ? 'it' : 'them'}, or delete ${outside.length === 1 ? 'its' : 'their'} IPAM first (vxnetctl ipam delete HEX)`,
      );
    }
    const unchangedSince = (dir: string) => ({
      key: Buffer.from(dir),
      range_end: prefixEnd(Buffer.from(dir)),
      target: 'Mod' as const,
      result: 'Less' as const,
      mod_revision: snapshot.revision + 1,
    });
    const result = await client.kv.txn({
      compare: [
        { key: Buffer.from(schema.ipamPoolKey), target: 'Mod', result: 'Equal', mod_revision: stored?.mod_revision ?? 0 },
        unchangedSince(schema.ipamDir),
        unchangedSince(schema.ipamPrefixesDir),
      ],
      success: [{ request_put: { key: Buffer.from(schema.ipamPoolKey), value: Buffer.from(serializeIpamPool({ prefix: pool.text })) } }],
      failure: [],
    });
    if (result.succeeded) return { pool: pool.text, ...(previousParsed?.ok ? { previous: previousParsed.value.prefix } : {}) };
  }
  throw new ConflictError(`gave up after ${MAX_ATTEMPTS} attempts: IPAM entries kept changing while the pool was set; retry`);
}

// ---- allocations ----

interface Allocations {
  revision: number;
  /** Every /64 held, by number, with the VNI hex holding it: from the entries and from the index. */
  allocated: Map<bigint, string>;
  entries: IpamRecord[];
  invalid: InvalidEntry[];
}

/**
 * Entries and index at one revision. A /64 counts as held if an entry names it or an index key
 * exists for it: an index key whose entry is gone (deleted by hand) still holds its /64, since a
 * create comparing "index key absent" could never take it; `ipam list` reports it.
 */
async function readAllocations(client: Etcd3, schema: EtcdSchema): Promise<Allocations> {
  const { revision, kvs } = await readPrefixes(client, [schema.ipamDir, schema.ipamPrefixesDir]);
  const [entryKvs, indexKvs] = kvs as [IKeyValue[], IKeyValue[]];
  const allocations: Allocations = { revision, allocated: new Map(), entries: [], invalid: [] };
  const byVni = new Map<number, IpamRecord>();
  for (const kv of entryKvs) {
    const key = kv.key.toString();
    const parsedKey = schema.parseKey(key);
    if (parsedKey.kind !== 'ipam') {
      allocations.invalid.push({ key, reason: parsedKey.kind === 'invalid' ? parsedKey.reason : 'not an IPAM key' });
      continue;
    }
    const parsed = parseIpamEntry(kv.value);
    if (!parsed.ok) {
      allocations.invalid.push({ key, vni: parsedKey.vni, reason: parsed.reason });
      continue;
    }
    const record = { vni: parsedKey.vni, hex: parsedKey.hex, entry: parsed.value, revision: Number(kv.mod_revision) };
    allocations.entries.push(record);
    byVni.set(record.vni, record);
    allocations.allocated.set(subnetNumber(parseSubnet(record.entry.prefix)), record.hex);
  }
  for (const kv of indexKvs) {
    const key = kv.key.toString();
    const parsedKey = schema.parseKey(key);
    if (parsedKey.kind !== 'ipam-prefix') {
      allocations.invalid.push({ key, reason: parsedKey.kind === 'invalid' ? parsedKey.reason : 'not an IPAM index key' });
      continue;
    }
    const vni = parseIpamIndex(kv.value);
    const holder = vni === undefined ? `? (index value ${JSON.stringify(kv.value.toString().slice(0, 20))})` : vniHex(vni);
    const number = subnetNumber(parseSubnet(parsedKey.subnet));
    if (!allocations.allocated.has(number)) allocations.allocated.set(number, holder);
    if (vni === undefined || byVni.get(vni)?.entry.prefix !== parsedKey.subnet) {
      allocations.invalid.push({
        key,
        reason: `index of ${parsedKey.subnet} names network ${holder}, which has no IPAM entry with that prefix: the /64 stays held until the key is deleted (etcdctl del ${key})`,
      });
    }
  }
  allocations.entries.sort((a, b) => a.vni - b.vni);
  return allocations;
}

export interface IpamCreateRequest {
  vni: number;
  /** A /64 asked for (--ipv6-prefix); otherwise the lowest free one of the pool. */
  subnet?: Ipv6Prefix;
  /** Checked name servers (parseDnsServers). */
  dns: string[];
  now?: () => number;
}

/**
 * Gives an existing network its /64 in one transaction that holds only if the network is still as
 * read, it has no IPAM entry, nobody holds the /64 (its index key is absent) and the pool is the
 * one allocated from.
 */
export async function createIpam(client: Etcd3, schema: EtcdSchema, request: IpamCreateRequest): Promise<IpamRecord> {
  const { vni } = request;
  const hex = vniHex(vni);
  const now = request.now ?? Date.now;
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const network = await readKey(client, schema.networkKey(vni));
    if (!network) throw new NotFoundError(`network ${hex} does not exist; create it first (vxnetctl network create), then its IPAM`);
    const existing = await readStoredIpam(client, schema, vni);
    if (existing) {
      throw new ConflictError(
        existing.entry.ok
          ? `network ${hex} already has IPAM: prefix ${existing.entry.value.prefix} (vxnetctl ipam get ${hex}); delete it first to give it another`
          : `network ${hex} already has an invalid IPAM entry (${existing.entry.reason}); delete it with vxnetctl ipam delete ${hex}`,
      );
    }
    const stored = await readStoredPool(client, schema);
    if (!stored) throw new RefusedError('no IPAM pool is set: set the cloud-wide one first, e.g. vxnetctl ipam pool set 2001:db8:100::/48');
    const { allocated } = await readAllocations(client, schema);
    const subnet = request.subnet ? checkedRequestedSubnet(request.subnet, stored.pool, allocated) : lowestFreeSubnet(stored.pool, allocated.keys());
    if (!subnet) throw new ConflictError(`the IPAM pool ${stored.pool.text} is exhausted: every /64 is allocated; widen it with vxnetctl ipam pool set`);

    const entry: IpamEntry = { prefix: subnet.text, dns: request.dns, createdAt: new Date(now()).toISOString() };
    // Held to the parser routers and `ipam list` use, so that nothing is written that they would refuse.
    const checked = parseIpamEntry(Buffer.from(serializeIpamEntry(entry)));
    if (!checked.ok) throw new RangeError(checked.reason);
    const indexKey = schema.ipamPrefixKey(subnet);
    const result = await client
      .if(schema.networkKey(vni), 'Mod', '==', network.mod_revision)
      .and(schema.ipamKey(vni), 'Create', '==', 0)
      .and(indexKey, 'Create', '==', 0)
      .and(schema.ipamPoolKey, 'Mod', '==', stored.kv.mod_revision)
      .then(client.put(schema.ipamKey(vni)).value(serializeIpamEntry(entry)), client.put(indexKey).value(serializeIpamIndex(vni)))
      .commit();
    if (result.succeeded) return { vni, hex, entry, revision: Number(result.header.revision) };
    // Lost a race (most often for the /64): the next attempt's reads see the winner.
  }
  throw new ConflictError(`gave up after ${MAX_ATTEMPTS} attempts: other writers kept taking the chosen /64; retry`);
}

function checkedRequestedSubnet(subnet: Ipv6Prefix, pool: Ipv6Prefix, allocated: ReadonlyMap<bigint, string>): Ipv6Prefix {
  if (!prefixContains(pool, subnet)) {
    throw new RefusedError(`${subnet.text} is outside the IPAM pool ${pool.text}; choose a /64 inside it, or omit --ipv6-prefix to get the lowest free one`);
  }
  const holder = allocated.get(subnetNumber(subnet));
  if (holder !== undefined) throw new ConflictError(`${subnet.text} is already allocated to network ${holder}; choose another, or omit --ipv6-prefix`);
  return subnet;
}

// ---- reads and delete ----

export async function getIpam(client: Etcd3, schema: EtcdSchema, vni: number): Promise<IpamRecord> {
  const hex = vniHex(vni);
  const stored = await readStoredIpam(client, schema, vni);
  if (!stored) {
    const network = await readKey(client, schema.networkKey(vni));
    throw new NotFoundError(network ? `network ${hex} has no IPAM (a layer-2 network); give it a prefix with vxnetctl ipam create ${hex}` : `network ${hex} does not exist`);
  }
  if (!stored.entry.ok) throw new ConflictError(`network ${hex} has an invalid IPAM entry: ${stored.entry.reason}; delete it with vxnetctl ipam delete ${hex}`);
  return { vni, hex, entry: stored.entry.value, revision: Number(stored.kv.mod_revision) };
}

export async function listIpam(client: Etcd3, schema: EtcdSchema): Promise<{ entries: IpamRecord[]; invalid: InvalidEntry[] }> {
  const { entries, invalid } = await readAllocations(client, schema);
  return { entries, invalid };
}

/**
 * Deletes a network's IPAM entry and its index key in one transaction (an entry that does not
 * parse is deleted too: deleting it is how it is fixed). The network stays, as a layer-2 network.
 */
export async function deleteIpam(client: Etcd3, schema: EtcdSchema, vni: number): Promise<{ prefix?: string }> {
  const hex = vniHex(vni);
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const stored = await readStoredIpam(client, schema, vni);
    if (!stored) throw new NotFoundError(`network ${hex} has no IPAM entry`);
    const transaction = client.if(schema.ipamKey(vni), 'Mod', '==', stored.kv.mod_revision);
    const writes: TxnWrite[] = [];
    addIpamGuard(client, schema, transaction, writes, vni, stored, true);
    const result = await transaction.then(...writes).commit();
    if (result.succeeded) return stored.entry.ok ? { prefix: stored.entry.value.prefix } : {};
  }
  throw new ConflictError(`gave up after ${MAX_ATTEMPTS} attempts: the IPAM entry of network ${hex} kept changing; retry`);
}

// ---- availability ----

export interface IpamStatus {
  record: IpamRecord;
  availability: Availability;
}

/**
 * The entry and whether every live router serves it. Live routers are the hosts whose liveness key
 * (bound to their agent's lease) says role "router"; each reports in its status for the network.
 */
export async function readIpamStatus(client: Etcd3, schema: EtcdSchema, vni: number): Promise<IpamStatus> {
  const record = await getIpam(client, schema, vni);
  const { hosts } = await readStatus(client, schema);
  const routers: RouterReport[] = hosts
    .filter((host) => host.agent?.role === 'router')
    .map((host) => {
      const ipam = host.networks.find((network) => network.vni === vni)?.status?.ipam;
      return { host: host.host, ...(ipam ? { ipam } : {}) };
    });
  return { record, availability: ipamAvailability({ prefix: record.entry.prefix, revision: record.revision }, routers) };
}

export interface WaitOptions {
  timeoutMs: number;
  /**
   * Longest time between reads. Reads also follow every change an etcd watch shows (a liveness
   * key, the network's status on any host, its IPAM entry), so this only bounds how late a change
   * the watch missed is seen.
   */
  intervalMs?: number;
  now?: () => number;
  /** Replaces the wakeable timer (tests); changes then wake nothing. */
  sleep?: (ms: number) => Promise<void>;
  /** Starts telling `onChange` about changes and returns how to stop; default: etcd watches. Tests pass none. */
  watchChanges?: ((onChange: () => void) => Promise<() => Promise<void>>) | null;
}

/** Between reads while a watch reports changes: the reads after a change are what count. */
const WATCHED_INTERVAL_MS = 5000;
/** Between reads when nothing reports changes. */
const POLL_INTERVAL_MS = 500;

/**
 * Reads until the IPAM entry is available, or throws NotAvailableError naming the routers it still
 * waits for. An entry deleted meanwhile ends the wait with NotFoundError. Each read is a whole
 * one (entry, liveness, statuses); the watch only says when to read again, so that a watch that
 * misses or reorders events can delay the answer, never make it wrong.
 */
export async function waitForIpam(client: Etcd3, schema: EtcdSchema, vni: number, options: WaitOptions): Promise<IpamStatus> {
  const now = options.now ?? Date.now;
  const deadline = now() + options.timeoutMs;
  let changed = false;
  let wake: (() => void) | undefined;
  const onChange = () => {
    changed = true;
    wake?.();
  };
  const watchChanges = options.watchChanges === undefined ? (notify: () => void) => watchIpamChanges(client, schema, vni, notify) : options.watchChanges;
  const stop = watchChanges ? await watchChanges(onChange) : undefined;
  const interval = options.intervalMs ?? (stop ? WATCHED_INTERVAL_MS : POLL_INTERVAL_MS);
  const pause =
    options.sleep ??
    ((ms: number) =>
      new Promise<void>((resolve) => {
        if (changed) return resolve();
        const timer = setTimeout(done, ms);
        wake = done;
        function done() {
          clearTimeout(timer);
          wake = undefined;
          resolve();
        }
      }));
  try {
    for (;;) {
      changed = false;
      const status = await readIpamStatus(client, schema, vni);
      if (status.availability.available) return status;
      const left = deadline - now();
      if (left <= 0) throw new NotAvailableError(`IPAM of network ${vniHex(vni)} is not available after ${options.timeoutMs / 1000} s: ${waitingText(status.availability)}`);
      await pause(Math.min(interval, left));
    }
  } finally {
    await stop?.();
  }
}

/** How long to wait for etcd to confirm a watch before reading anyway (the reads' interval covers a late one). */
const WATCH_CONFIRM_MS = 2000;

/**
 * Watches what availability depends on: every host's keys (filtered to liveness keys and statuses
 * of this network) and the network's IPAM entry. Resolves once etcd confirmed both watches (or
 * after WATCH_CONFIRM_MS), so that a change made after the first read is not missed.
 */
async function watchIpamChanges(client: Etcd3, schema: EtcdSchema, vni: number, onChange: () => void): Promise<() => Promise<void>> {
  const relevant = (key: string) => {
    const parsed = schema.parseKey(key);
    return parsed.kind === 'agent' || parsed.kind === 'ipam' || (parsed.kind === 'status' && parsed.vni === vni);
  };
  // watcher(), not create(): create() never settles when the stream drops before etcd confirms.
  const watchers = [client.watch().prefix(schema.hostsDir).watcher(), client.watch().key(schema.ipamKey(vni)).watcher()];
  const live = new Set(watchers);
  const confirmed = watchers.map(
    (watcher) =>
      new Promise<void>((resolve) => {
        watcher.once('connected', () => resolve());
        // A watch that fails leaves the reads' interval to see changes.
        for (const end of ['error', 'end'] as const) {
          watcher.once(end, () => {
            live.delete(watcher);
            resolve();
          });
        }
        watcher.on('put', (kv: IKeyValue) => relevant(kv.key.toString()) && onChange());
        watcher.on('delete', (kv: IKeyValue) => relevant(kv.key.toString()) && onChange());
        // etcd3 emits 'error' on an emitter with no listener as an exception.
        watcher.on('error', () => undefined);
      }),
  );
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([Promise.all(confirmed), new Promise<void>((resolve) => (timer = setTimeout(resolve, WATCH_CONFIRM_MS)))]);
  clearTimeout(timer);
  return async () => {
    // A watcher that ended is etcd3's no longer: cancelling it again would never settle.
    await Promise.all([...live].map((watcher) => Promise.race([watcher.cancel().catch(() => undefined), new Promise((resolve) => setTimeout(resolve, 1000).unref())])));
  };
}

/** What availability waits for, in one line. */
export function waitingText(availability: Availability): string {
  if (availability.reason) return availability.reason;
  const waiting = availability.routers.filter((router) => !router.serving);
  if (waiting.length === 0) return 'available';
  return `waiting for ${waiting.map((router) => `${router.host} (${router.serving ? '' : router.reason})`).join(', ')}`;
}
