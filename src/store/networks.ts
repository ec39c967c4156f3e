/**
 * Control-plane operations on the etcd data model (DESIGN.md §1), as used by
 * vxnetctl. Every function takes a client and the schema of a key prefix
 * (store/schema.ts, which also describes the owner index this module keeps).
 *
 * The owner index is only a hint: the network's own `owner` field is the
 * truth, and an index key that points at a missing or re-owned network is
 * treated as stale and replaced.
 */
import type { Etcd3, ICompare, IKeyValue, IRequestOp } from 'etcd3';
import { groupFor, parseGroupBase, reservedGroupReason, type GroupBase } from '../model/group.js';
import type { NetworkSpec } from '../model/spec.js';
import { vniHex, VNI_MAX, VNI_MIN } from '../model/vni.js';
import { readStoredIpam } from './ipam-records.js';
import { prefixEnd, readPrefix, readPrefixAt } from './paged-range.js';
import {
  parseAttachment,
  parseDeletedNetwork,
  parseLiveness,
  parseOwnerIndex,
  parseSettings,
  parseSpec,
  parseStatus,
  QUARANTINE_MAX_SECONDS,
  QUARANTINE_MIN_SECONDS,
  serializeAttachment,
  serializeDeletedNetwork,
  serializeOwnerIndex,
  serializeSettings,
  serializeSpec,
  type AgentLiveness,
  type CloudSettings,
  type DeletedNetwork,
  type EtcdSchema,
  type NetworkStatus,
  type Parsed,
} from './schema.js';

export { isEtcdTimeout, isEtcdUnreachable } from './client.js';

export interface Network {
  vni: number;
  hex: string;
  spec: NetworkSpec;
}

/** A key whose name or value breaks the data model; reported, never fatal. */
export interface InvalidEntry {
  key: string;
  /** Set when the key names a VNI (only the value is bad), so the VNI still counts as taken. */
  vni?: number;
  reason: string;
}

export interface NetworkListing {
  networks: Network[];
  invalid: InvalidEntry[];
}

export interface CreateRequest {
  vni?: number;
  mtu?: number;
  owner?: string;
  description?: string;
  groupBase: GroupBase;
  /** How long a deleted VNI is not handed out again (see EtcdSchema.deletedKey and quarantinePolicy). */
  quarantineMs: number;
  /** Records older than this are pruned on the way (default: quarantineMs). */
  keepRecordsMs?: number;
  /** Reuse a quarantined --vni now. */
  force?: boolean;
  /** The time quarantines are measured against (tests pass their own). */
  now?: () => number;
}

export interface CreateResult {
  network: Network;
  /** False when an existing network of the same owner was returned instead. */
  created: boolean;
}

/** The network, host attachment or host asked for does not exist. */
export class NotFoundError extends Error {
  override name = 'NotFoundError';
}

/** The request contradicts what is stored (VNI taken, owner has another VNI, spec invalid …). */
export class ConflictError extends Error {
  override name = 'ConflictError';
}

/**
 * Refused on purpose, nothing written: the owner's network has another MTU, hosts are still
 * attached, the VNI is quarantined. The message says what would make it pass (often --force).
 */
export class RefusedError extends ConflictError {
  override name = 'RefusedError';
}

/** Why a VNI must not be used with this group base, or undefined if it may. */
export function reservedVniProblem(groupBase: GroupBase, vni: number): string | undefined {
  const group = groupFor(groupBase, vni);
  const reason = reservedGroupReason(group);
  if (!reason) return undefined;
  return `VNI ${vniHex(vni)} maps to multicast group ${group.text}, which is reserved (${reason}); choose another VNI`;
}

/** The spec vxnetctl writes, checked by the same parser the agent uses so it can never write what the agent rejects. */
export function specFor(request: Pick<CreateRequest, 'mtu' | 'owner' | 'description'>): NetworkSpec {
  const spec: NetworkSpec = {
    type: 'vxlan',
    ...(request.mtu !== undefined ? { mtu: request.mtu } : {}),
    ...(request.owner !== undefined ? { owner: request.owner } : {}),
    ...(request.description !== undefined ? { description: request.description } : {}),
  };
  const checked = parseSpec(Buffer.from(serializeSpec(spec)));
  if (!checked.ok) throw new RangeError(checked.error.message);
  return spec;
}

export async function listNetworks(client: Etcd3, schema: EtcdSchema): Promise<NetworkListing> {
  const listing: NetworkListing = { networks: [], invalid: [] };
  for (const kv of await readPrefix(client, schema.networksDir)) {
    const parsed = parseNetworkEntry(schema, kv.key.toString(), kv.value);
    if ('spec' in parsed) listing.networks.push(parsed);
    else listing.invalid.push(parsed);
  }
  listing.networks.sort((a, b) => a.vni - b.vni);
  return listing;
}

function parseNetworkEntry(schema: EtcdSchema, key: string, value: Buffer): Network | InvalidEntry {
  const parsedKey = schema.parseKey(key);
  if (parsedKey.kind !== 'network') return { key, reason: parsedKey.kind === 'invalid' ? parsedKey.reason : 'not a network key' };
  const { vni, hex } = parsedKey;
  const parsed = parseSpec(value);
  if (!parsed.ok) return { key, vni, reason: parsed.error.message };
  return { vni, hex, spec: parsed.spec };
}

export async function getNetwork(client: Etcd3, schema: EtcdSchema, vni: number): Promise<Network> {
  const key = schema.networkKey(vni);
  const value = await client.get(key).buffer();
  if (value === null) throw new NotFoundError(`network ${vniHex(vni)} does not exist (key ${key})`);
  const parsed = parseNetworkEntry(schema, key, value);
  if ('spec' in parsed) return parsed;
  throw new ConflictError(`network ${vniHex(vni)} has an invalid spec: ${parsed.reason}; fix or delete key ${key}`);
}

// Each failed attempt means another creator won a VNI (or the owner) in the
// meantime, so this bounds the number of concurrent creators we outlast.
const MAX_CREATE_ATTEMPTS = 100;
/** etcd's default --max-txn-ops: the most comparisons, and the most operations, in one transaction. */
const ETCD_MAX_TXN_OPS = 128;
/** Expired quarantine records pruned per transaction: bounded, so that a backlog never makes a transaction big. */
const PRUNES_PER_TXN = 8;

type TxnWrite = ReturnType<Etcd3['put']> | ReturnType<Etcd3['delete']>;

/** The quarantine when neither the cloud-wide settings nor the command say otherwise. */
export const DEFAULT_QUARANTINE_MS = 24 * 3_600_000;

export interface QuarantinePolicy {
  /** How long a deleted VNI is not handed out again by this command. */
  quarantineMs: number;
  /** Records younger than this are kept: a shorter quarantine for one command never prunes what others still honour. */
  keepRecordsMs: number;
}

/** The cloud-wide quarantine (CloudSettings.quarantineSeconds, else 24 h), or this command's override of it. */
export function quarantinePolicy(settings: CloudSettings, overrideMs?: number): QuarantinePolicy {
  const cloudWideMs = settings.quarantineSeconds === undefined ? DEFAULT_QUARANTINE_MS : settings.quarantineSeconds * 1000;
  return { quarantineMs: overrideMs ?? cloudWideMs, keepRecordsMs: Math.max(overrideMs ?? 0, cloudWideMs) };
}

/**
 * Creates a network: at the requested VNI, or at the lowest free VNI whose multicast group is not
 * reserved and that was not deleted less than the quarantine ago. With an owner, that owner's
 * existing network is returned instead (created: false), also under concurrency.
 */
export async function createNetwork(client: Etcd3, schema: EtcdSchema, request: CreateRequest): Promise<CreateResult> {
  const spec = specFor(request);
  const now = request.now ?? Date.now;
  if (request.vni !== undefined) {
    const problem = reservedVniProblem(request.groupBase, request.vni);
    if (problem) throw new RangeError(problem);
  }
  const ownerIndex = request.owner === undefined ? undefined : { owner: request.owner, key: schema.ownerKey(request.owner) };
  for (let attempt = 1; attempt <= MAX_CREATE_ATTEMPTS; attempt++) {
    // The owner index is read before the networks: a claim committed after
    // this read fails our comparison, one committed before it is in the listing.
    const indexed = ownerIndex && (await readKey(client, ownerIndex.key));
    const listing = await listNetworks(client, schema);
    const owned = ownerIndex && findOwnedNetwork(ownerIndex, indexed, listing);
    if (owned && 'existing' in owned) return { network: sameNetworkOrThrow(owned.existing, request), created: false };

    const taken = takenVnis(listing);
    if (request.vni !== undefined && taken.has(request.vni)) {
      throw new ConflictError(`network ${vniHex(request.vni)} already exists; choose another --vni or omit it to allocate one`);
    }
    const quarantine = await readQuarantine(client, schema, now(), request.quarantineMs, request.keepRecordsMs);
    if (request.vni !== undefined && !request.force) {
      const record = quarantine.active.get(request.vni);
      if (record) throw new RefusedError(quarantinedMessage(request.vni, record));
    }
    const vni = request.vni ?? lowestFreeVni(new Set([...taken, ...quarantine.active.keys()]), request.groupBase);
    const key = schema.networkKey(vni);
    const transaction = client.if(key, 'Create', '==', 0);
    const writes: TxnWrite[] = [client.put(key).value(serializeSpec(spec))];
    if (owned) {
      const { key: ownerKey, column, expected } = owned.claim;
      transaction.and(ownerKey, column, '==', expected);
      writes.push(client.put(ownerKey).value(serializeOwnerIndex(vni)));
    }
    // The VNI's record as we read it: one written since (the VNI created and deleted meanwhile) fails the commit.
    const record = quarantine.records.get(vni);
    transaction.and(schema.deletedKey(vni), 'Mod', '==', record?.modRevision ?? 0);
    // A network under the VNI again makes its record moot (an expired one, or one --force overrides).
    if (record) writes.push(client.delete().key(schema.deletedKey(vni)));
    for (const prune of prunable(quarantine, vni)) {
      transaction.and(schema.deletedKey(prune.vni), 'Mod', '==', prune.modRevision);
      writes.push(client.delete().key(schema.deletedKey(prune.vni)));
    }
    const result = await transaction.then(...writes).commit();
    if (result.succeeded) return { network: { vni, hex: vniHex(vni), spec }, created: true };
    // Lost a race for the VNI, the owner or a record: the next attempt's fresh reads see the winner.
  }
  throw new ConflictError(
    `gave up after ${MAX_CREATE_ATTEMPTS} attempts: other creators kept taking the chosen VNI; retry`,
  );
}

/** The transaction comparison that proves nobody claimed the owner since we looked. */
interface OwnerClaim {
  key: string;
  column: 'Create' | 'Mod';
  expected: number | string;
}

function findOwnedNetwork(
  { owner, key }: { owner: string; key: string },
  indexed: IKeyValue | undefined,
  listing: NetworkListing,
): { existing: Network } | { claim: OwnerClaim } {
  const indexedVni = indexed ? parseOwnerIndex(indexed.value) : undefined;
  const indexedNetwork = listing.networks.find((network) => network.vni === indexedVni);
  if (indexedNetwork?.spec.owner === owner) return { existing: indexedNetwork };
  const broken = listing.invalid.find((entry) => entry.vni !== undefined && entry.vni === indexedVni);
  if (broken) {
    throw new ConflictError(`owner ${JSON.stringify(owner)} has a network whose spec is invalid: ${broken.reason}; fix or delete key ${broken.key}`);
  }
  // Networks written by other tools carry the owner without an index key.
  const unindexed = listing.networks.find((network) => network.spec.owner === owner);
  if (unindexed) return { existing: unindexed };
  // A stale index key (its network deleted or re-owned by another tool) is replaced.
  return { claim: indexed ? { key, column: 'Mod', expected: indexed.mod_revision } : { key, column: 'Create', expected: 0 } };
}

/**
 * The owner's existing network, if it is what the request asks for. An MTU asked for and not the
 * existing network's is refused: returning the network anyway would let a hook believe its VMs get
 * an MTU they do not. (A description is free text, and a different one is no reason to fail.)
 */
function sameNetworkOrThrow(existing: Network, request: CreateRequest): Network {
  if (request.vni !== undefined && request.vni !== existing.vni) {
    throw new ConflictError(
      `owner ${JSON.stringify(request.owner)} already has network ${existing.hex}, not ${vniHex(request.vni)}; omit --vni or use another owner`,
    );
  }
  if (request.mtu !== undefined && request.mtu !== existing.spec.mtu) {
    const mtu = existing.spec.mtu === undefined ? 'no MTU set (the underlay limit)' : `MTU ${existing.spec.mtu}`;
    throw new RefusedError(
      `owner ${JSON.stringify(request.owner)} already has network ${existing.hex} with ${mtu}, not ${request.mtu}; ` +
        `omit --mtu to get that network, or use another owner`,
    );
  }
  return existing;
}

function takenVnis(listing: NetworkListing): Set<number> {
  const taken = new Set(listing.networks.map((network) => network.vni));
  for (const entry of listing.invalid) if (entry.vni !== undefined) taken.add(entry.vni);
  return taken;
}

export function lowestFreeVni(taken: ReadonlySet<number>, groupBase: GroupBase): number {
  for (let vni = VNI_MIN; vni <= VNI_MAX; vni++) {
    if (!taken.has(vni) && !reservedVniProblem(groupBase, vni)) return vni;
  }
  throw new ConflictError(`every VNI ${VNI_MIN}…${VNI_MAX} is taken or reserved`);
}

export interface DeleteRequest {
  /** Also delete the hosts' attachments and the IPAM entry (otherwise their presence refuses the delete). */
  force?: boolean;
  /** How long records are kept: older ones are pruned on the way (quarantinePolicy's keepRecordsMs). */
  quarantineMs: number;
  now?: () => number;
}

export interface DeleteResult {
  /** Hosts whose attachments went with the network (only with force). */
  detached: string[];
  /** The network's IPAM went with it (only with force): its prefix, or null for an entry that did not parse. */
  ipamPrefix?: string | null;
}

/**
 * Ops of one delete transaction besides the attachments: the network, the owner index, the
 * quarantine record, the network's members index (one range) and the pruned records; the
 * comparisons: the network, the owner index, the IPAM entry (absent or as read), the hosts'
 * directory and the pruned records. etcd takes at most 128 (--max-txn-ops) of each kind.
 */
export const MAX_FORCED_ATTACHMENTS = ETCD_MAX_TXN_OPS - 4 - PRUNES_PER_TXN;
/** A network with IPAM also deletes its entry and index key, and compares the index key. */
const IPAM_OPS = 2;
/** Keys created under the hosts' directory since a delete's read that one failed commit looks at. */
const CREATED_SINCE_LIMIT = 256;
/** Commits of one delete after one read, while all that stood in the way was keys that attach no host to it. */
const COMMITS_PER_READ = 8;

/**
 * Deletes a network in one transaction with the owner index key that points at it and its
 * quarantine record (EtcdSchema.deletedKey); refused while hosts are attached, unless forced,
 * which deletes their attachments in the same transaction.
 *
 * The transaction compares every key it read, so a network changed or re-created, or an attachment
 * rewritten or removed, meanwhile makes it read again. An attachment added by some host since the
 * read cannot be compared key by key (nobody knows its key yet), so the transaction also requires
 * that no key under the hosts' directory was created after the read (a compare of create_revision
 * over the directory's range). Statuses and liveness keys are created there all the time: when a
 * commit fails, its failure branch returns the keys created since, and if none of them attaches a
 * host to this network the same commit is tried again, judged from that revision on, without a
 * new read of the directory.
 */
export async function deleteNetwork(client: Etcd3, schema: EtcdSchema, vni: number, request: DeleteRequest): Promise<DeleteResult> {
  const key = schema.networkKey(vni);
  const hex = vniHex(vni);
  const now = request.now ?? Date.now;
  const hostsDir = Buffer.from(schema.hostsDir);
  const hostsEnd = prefixEnd(hostsDir);
  for (let attempt = 1; attempt <= MAX_CREATE_ATTEMPTS; attempt++) {
    const stored = await readKey(client, key);
    if (!stored) throw new NotFoundError(`network ${hex} does not exist (key ${key})`);
    const parsed = parseSpec(stored.value);
    const owner = parsed.ok ? parsed.spec.owner : undefined;
    const { revision, hostKeys } = await readHostKeys(client, schema);
    const attachments = hostKeys.filter((entry) => entry.kind === 'attachment' && entry.vni === vni);
    const hosts = attachments.map((entry) => entry.host).sort();
    if (hosts.length > 0 && !request.force) {
      throw new RefusedError(
        `hosts ${hosts.join(', ')} are still attached to network ${hex}; detach them first (vxnetctl host detach HOST ${hex}), ` +
          `or pass --force to delete their attachments with the network`,
      );
    }
    const ipam = await readStoredIpam(client, schema, vni);
    if (ipam && !request.force) {
      const prefix = ipam.entry.ok ? ` (prefix ${ipam.entry.value.prefix})` : '';
      throw new RefusedError(
        `network ${hex} has IPAM${prefix}; delete it first (vxnetctl ipam delete ${hex}), or pass --force to delete it with the network`,
      );
    }
    const maxAttachments = MAX_FORCED_ATTACHMENTS - (ipam ? IPAM_OPS : 0);
    if (hosts.length > maxAttachments) {
      throw new RefusedError(
        `${hosts.length} hosts are attached to network ${hex}, more than one etcd transaction can detach with it (${maxAttachments}); ` +
          `detach some with vxnetctl host detach HOST ${hex}, then delete it`,
      );
    }
    const compare: ICompare[] = [modIs(key, stored.mod_revision)];
    const success: IRequestOp[] = [deleteOp(key)];
    for (const attachment of attachments) {
      compare.push(modIs(attachment.kv.key, attachment.kv.mod_revision));
      success.push(deleteOp(attachment.kv.key));
    }
    // Also when there is none: an IPAM entry created meanwhile makes the delete read again (and refuse).
    compare.push(modIs(schema.ipamKey(vni), ipam?.kv.mod_revision ?? 0));
    if (ipam) {
      success.push(deleteOp(schema.ipamKey(vni)));
      if (ipam.index) {
        compare.push(modIs(ipam.index.key, ipam.index.mod_revision));
        success.push(deleteOp(ipam.index.key));
      }
    }
    // No host carries a network that is gone: agents that were stopped meanwhile would otherwise stay in its flood lists.
    const members = Buffer.from(schema.membersOf(vni));
    success.push({ request_delete_range: { key: members, range_end: prefixEnd(members) } });
    if (owner !== undefined) {
      const ownerKey = schema.ownerKey(owner);
      const indexed = await readKey(client, ownerKey);
      if (indexed && parseOwnerIndex(indexed.value) === vni) {
        compare.push(modIs(ownerKey, indexed.mod_revision));
        success.push(deleteOp(ownerKey));
      }
    }
    const deletedAt = new Date(now()).toISOString();
    const record = serializeDeletedNetwork({ deletedAt, ...(owner !== undefined ? { owner } : {}) });
    success.push({ request_put: { key: Buffer.from(schema.deletedKey(vni)), value: Buffer.from(record) } });
    for (const prune of prunable(await readQuarantine(client, schema, now(), request.quarantineMs), vni)) {
      compare.push(modIs(schema.deletedKey(prune.vni), prune.modRevision));
      success.push(deleteOp(schema.deletedKey(prune.vni)));
    }
    let readAt = revision;
    for (let commit = 1; commit <= COMMITS_PER_READ; commit++) {
      const result = await client.kv.txn({
        compare: [...compare, { key: hostsDir, range_end: hostsEnd, target: 'Create', result: 'Less', create_revision: readAt + 1 }],
        success,
        failure: [{ request_range: { key: hostsDir, range_end: hostsEnd, keys_only: true, min_create_revision: readAt + 1, limit: CREATED_SINCE_LIMIT } }],
      });
      if (result.succeeded) return { detached: hosts, ...(ipam ? { ipamPrefix: ipam.entry.ok ? ipam.entry.value.prefix : null } : {}) };
      const created = result.responses[0]?.response_range;
      // Nothing created (another comparison failed), more than we look at, or a host attached to this network: read again.
      if (!created || created.more || created.kvs.length === 0) break;
      if (created.kvs.some((kv) => attachesTo(schema, kv.key, vni))) break;
      readAt = Number(result.header.revision);
    }
  }
  throw new ConflictError(`gave up after ${MAX_CREATE_ATTEMPTS} attempts: network ${hex} or its attachments kept changing; retry`);
}

function attachesTo(schema: EtcdSchema, key: Buffer, vni: number): boolean {
  const parsed = schema.parseKey(key.toString());
  return parsed.kind === 'attachment' && parsed.vni === vni;
}

function modIs(key: string | Buffer, modRevision: string | number): ICompare {
  return { key: Buffer.from(key), target: 'Mod', result: 'Equal', mod_revision: modRevision };
}

function deleteOp(key: string | Buffer): IRequestOp {
  return { request_delete_range: { key: Buffer.from(key) } };
}

// ---- quarantine ----

interface QuarantineRecord extends DeletedNetwork {
  modRevision: string;
  /** When the VNI may be handed out again (epoch ms). */
  until: number;
}

interface Quarantine {
  /** Every record, by VNI (a record that does not parse counts as deleted now: it still quarantines). */
  records: Map<number, QuarantineRecord>;
  /** Records younger than the quarantine. */
  active: Map<number, QuarantineRecord>;
  /** Records older than they are kept, with their keys: pruned a few at a time. */
  expired: Array<{ vni: number; modRevision: string }>;
}

/** Records younger than `quarantineMs` are active; those older than `keepRecordsMs` (default: the same) expired. */
async function readQuarantine(client: Etcd3, schema: EtcdSchema, now: number, quarantineMs: number, keepRecordsMs = quarantineMs): Promise<Quarantine> {
  const quarantine: Quarantine = { records: new Map(), active: new Map(), expired: [] };
  for (const kv of await readPrefix(client, schema.deletedDir)) {
    const parsedKey = schema.parseKey(kv.key.toString());
    if (parsedKey.kind !== 'deleted') continue;
    const parsed = parseDeletedNetwork(kv.value);
    const deletedAt = parsed.ok ? parsed.value.deletedAt : new Date(now).toISOString();
    const record = { ...(parsed.ok ? parsed.value : {}), deletedAt, modRevision: kv.mod_revision, until: Date.parse(deletedAt) + quarantineMs };
    quarantine.records.set(parsedKey.vni, record);
    if (record.until > now) quarantine.active.set(parsedKey.vni, record);
    if (Date.parse(deletedAt) + keepRecordsMs <= now) quarantine.expired.push({ vni: parsedKey.vni, modRevision: kv.mod_revision });
  }
  return quarantine;
}

/** A few expired records to delete (each compared by the caller, so that a fresh record is never pruned), except `keep`'s. */
function prunable(quarantine: Quarantine, keep: number): Quarantine['expired'] {
  return quarantine.expired.filter((record) => record.vni !== keep).slice(0, PRUNES_PER_TXN);
}

function quarantinedMessage(vni: number, record: DeletedNetwork & { until: number }): string {
  const owner = record.owner === undefined ? '' : ` (owner ${JSON.stringify(record.owner)})`;
  return (
    `network ${vniHex(vni)}${owner} was deleted at ${record.deletedAt}; its VNI is quarantined until ${new Date(record.until).toISOString()} ` +
    `so that no host still plugged into the old network finds a new one under it; pass --force to use it now`
  );
}

// ---- cloud-wide settings ----

/** The cloud-wide settings; {} when none were ever written. */
export async function readSettings(client: Etcd3, schema: EtcdSchema): Promise<CloudSettings> {
  const value = await client.get(schema.settingsKey).buffer();
  if (value === null) return {};
  const parsed = parseSettings(value);
  if (!parsed.ok) throw new ConflictError(`${schema.settingsKey} is invalid: ${parsed.reason}; fix it with vxnetctl settings set`);
  return parsed.value;
}

export interface SettingsChange {
  groupBase?: GroupBase;
  quarantineSeconds?: number;
}

/** Changes cloud-wide settings, keeping the others (compare-and-swap, so a concurrent change is not lost). */
export async function updateSettings(client: Etcd3, schema: EtcdSchema, change: SettingsChange): Promise<CloudSettings> {
  const { quarantineSeconds } = change;
  if (quarantineSeconds !== undefined && !(Number.isInteger(quarantineSeconds) && quarantineSeconds >= QUARANTINE_MIN_SECONDS && quarantineSeconds <= QUARANTINE_MAX_SECONDS)) {
    throw new RangeError(`a quarantine of ${quarantineSeconds} s is not between 1h and 8760h`);
  }
  const key = schema.settingsKey;
  for (let attempt = 1; attempt <= MAX_CREATE_ATTEMPTS; attempt++) {
    const stored = await readKey(client, key);
    const parsed = stored ? parseSettings(stored.value) : undefined;
    // A value that does not parse is replaced: setting it right is what this command is for.
    const settings: CloudSettings = {
      ...(parsed?.ok ? parsed.value : {}),
      ...(change.groupBase !== undefined ? { groupBase: change.groupBase.text } : {}),
      ...(quarantineSeconds !== undefined ? { quarantineSeconds } : {}),
    };
    const result = await client
      .if(key, 'Mod', '==', stored?.mod_revision ?? 0)
      .then(client.put(key).value(serializeSettings(settings)))
      .commit();
    if (result.succeeded) return settings;
  }
  throw new ConflictError(`gave up after ${MAX_CREATE_ATTEMPTS} attempts: ${key} kept changing; retry`);
}

/** The group base allocations must respect: the cloud-wide one, else `fallback` (vxnetctl's --group-base). */
export function effectiveGroupBase(settings: CloudSettings, fallback: GroupBase): GroupBase {
  return settings.groupBase === undefined ? fallback : parseGroupBase(settings.groupBase);
}

/** Attaches a host to an existing network; false if it was already attached (its value is kept). */
export async function attachHost(client: Etcd3, schema: EtcdSchema, host: string, vni: number): Promise<boolean> {
  const network = schema.networkKey(vni);
  const attachment = schema.attachmentKey(host, vni);
  const result = await client
    .if(network, 'Create', '>', 0)
    .and(attachment, 'Create', '==', 0)
    .then(client.put(attachment).value(serializeAttachment()))
    .else(client.get(network))
    .commit();
  if (result.succeeded) return true;
  if (result.responses[0]!.response_range.kvs.length === 0) {
    throw new NotFoundError(`network ${vniHex(vni)} does not exist; create it before attaching hosts`);
  }
  return false;
}

export async function detachHost(client: Etcd3, schema: EtcdSchema, host: string, vni: number): Promise<void> {
  const { deleted } = await client.delete().key(schema.attachmentKey(host, vni)).exec();
  if (deleted === '0') throw new NotFoundError(`host ${host} is not attached to network ${vniHex(vni)}`);
}

export interface RemovedHost {
  /** Keys under the host's directory (agent, attachments, statuses) and in the members index. */
  hostKeys: number;
  memberOf: string[];
}

/**
 * Takes a host out of the cloud for good: every key under its directory and its keys in the
 * members index, so that no agent floods to it any more (unicast mode). Refused while its agent's
 * liveness key exists unless forced: a running agent writes its members keys again.
 */
export async function removeHost(client: Etcd3, schema: EtcdSchema, host: string, opts: { force?: boolean } = {}): Promise<RemovedHost> {
  const agent = await readKey(client, schema.agentKey(host));
  if (agent && !opts.force) {
    throw new RefusedError(
      `the agent of ${host} is running (${schema.agentKey(host)} exists) and would publish its networks again; ` +
        `stop it first (systemctl stop vxnetd on ${host}), or pass --force`,
    );
  }
  const memberOf: string[] = [];
  const memberKeys: string[] = [];
  for (const kv of await readPrefix(client, schema.membersDir)) {
    const parsed = schema.parseKey(kv.key.toString());
    if (parsed.kind === 'member' && parsed.host === host) {
      memberOf.push(parsed.hex);
      memberKeys.push(kv.key.toString());
    }
  }
  const hostDir = schema.hostDir(host);
  const hostKeys = await client.getAll().prefix(hostDir).count();
  if (hostKeys === 0 && memberKeys.length === 0) throw new NotFoundError(`host ${host} has no keys under ${hostDir} and is in no members index`);
  await client.delete().prefix(hostDir).exec();
  // Transactions of at most etcd's --max-txn-ops deletes each.
  for (let from = 0; from < memberKeys.length; from += ETCD_MAX_TXN_OPS) {
    const success = memberKeys.slice(from, from + ETCD_MAX_TXN_OPS).map((key) => ({ request_delete_range: { key: Buffer.from(key) } }));
    await client.kv.txn({ compare: [], success, failure: [] });
  }
  return { hostKeys, memberOf };
}

/** Hosts that have an attachment for this network, sorted. */
export async function attachedHosts(client: Etcd3, schema: EtcdSchema, vni: number): Promise<string[]> {
  const { hostKeys } = await readHostKeys(client, schema);
  return hostKeys
    .filter((entry) => entry.kind === 'attachment' && entry.vni === vni)
    .map((entry) => entry.host)
    .sort();
}

export interface HostNetworkStatus {
  vni: number;
  hex: string;
  attached: boolean;
  /** The agent's status value, undefined until the agent has written one. */
  status?: NetworkStatus;
}

export interface HostStatus {
  host: string;
  /** The agent's liveness value; undefined when its lease has expired or it never ran. */
  agent?: AgentLiveness;
  networks: HostNetworkStatus[];
}

export interface StatusReport {
  hosts: HostStatus[];
  invalid: InvalidEntry[];
}

/** Agent liveness, attachments and per-network status of every host, or of one host. */
export async function readStatus(client: Etcd3, schema: EtcdSchema, host?: string): Promise<StatusReport> {
  const { hostKeys, invalid } = await readHostKeys(client, schema, host);
  const hosts = new Map<string, HostStatus>();
  const hostStatus = (name: string) => {
    let entry = hosts.get(name);
    if (!entry) hosts.set(name, (entry = { host: name, networks: [] }));
    return entry;
  };
  // By host and VNI: a host may carry tens of thousands of networks.
  const byHostAndVni = new Map<string, HostNetworkStatus>();
  const networkStatus = (name: string, vni: number, hex: string) => {
    let entry = byHostAndVni.get(`${name}/${hex}`);
    if (!entry) {
      hostStatus(name).networks.push((entry = { vni, hex, attached: false }));
      byHostAndVni.set(`${name}/${hex}`, entry);
    }
    return entry;
  };
  const valid = <T>(entry: HostKey, parsed: Parsed<T>): T | undefined => {
    if (parsed.ok) return parsed.value;
    invalid.push({ key: entry.kv.key.toString(), ...('vni' in entry ? { vni: entry.vni } : {}), reason: parsed.reason });
    return undefined;
  };
  for (const entry of hostKeys) {
    if (entry.kind === 'agent') {
      const agent = valid(entry, parseLiveness(entry.kv.value));
      if (agent) hostStatus(entry.host).agent = agent;
    } else if (entry.kind === 'attachment') {
      // The attachment exists whatever its value; a value that is not a JSON object is still reported.
      valid(entry, parseAttachment(entry.kv.value));
      networkStatus(entry.host, entry.vni, entry.hex).attached = true;
    } else {
      const status = valid(entry, parseStatus(entry.kv.value));
      if (status) networkStatus(entry.host, entry.vni, entry.hex).status = status;
    }
  }
  const sorted = [...hosts.values()].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  for (const entry of sorted) entry.networks.sort((a, b) => a.vni - b.vni);
  return { hosts: sorted, invalid };
}

type HostKey =
  | { kind: 'agent'; host: string; kv: IKeyValue }
  | { kind: 'attachment' | 'status'; host: string; vni: number; hex: string; kv: IKeyValue };

async function readHostKeys(client: Etcd3, schema: EtcdSchema, host?: string): Promise<{ revision: number; hostKeys: HostKey[]; invalid: InvalidEntry[] }> {
  const hostKeys: HostKey[] = [];
  const invalid: InvalidEntry[] = [];
  const { revision, kvs } = await readPrefixAt(client, host === undefined ? schema.hostsDir : schema.hostDir(host));
  for (const kv of kvs) {
    const key = kv.key.toString();
    const parsed = schema.parseKey(key);
    if (parsed.kind === 'agent' || parsed.kind === 'attachment' || parsed.kind === 'status') hostKeys.push({ ...parsed, kv });
    else invalid.push({ key, reason: parsed.kind === 'invalid' ? parsed.reason : `not a host key` });
  }
  return { revision, hostKeys, invalid };
}

async function readKey(client: Etcd3, key: string): Promise<IKeyValue | undefined> {
  const response = await client.get(key).exec();
  return response.kvs[0];
}
