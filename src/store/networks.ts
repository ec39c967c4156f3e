/**
 * Control-plane operations on the etcd data model (DESIGN.md §1), as used by
 * vxnetctl. Every function takes a client and the schema of a key prefix
 * (store/schema.ts, which also describes the owner index this module keeps).
 *
 * The owner index is only a hint: the network's own `owner` field is the
 * truth, and an index key that points at a missing or re-owned network is
 * treated as stale and replaced.
 */
import { GRPCDeadlineExceededError, GRPCUnavailableError, type Etcd3, type IKeyValue } from 'etcd3';
import { groupFor, reservedGroupReason, type GroupBase } from '../model/group.js';
import type { NetworkSpec } from '../model/spec.js';
import { vniHex, VNI_MAX, VNI_MIN } from '../model/vni.js';
import { readPrefix } from './paged-range.js';
import {
  parseAttachment,
  parseLiveness,
  parseOwnerIndex,
  parseSpec,
  parseStatus,
  serializeAttachment,
  serializeOwnerIndex,
  serializeSpec,
  type AgentLiveness,
  type EtcdSchema,
  type NetworkStatus,
  type Parsed,
} from './schema.js';

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

/** True when etcd could not be reached or did not answer within the call deadline. */
export function isEtcdUnreachable(error: unknown): boolean {
  return error instanceof GRPCUnavailableError || isEtcdTimeout(error);
}

/** True when etcd accepted the connection (or never answered) but did not reply within the call deadline. */
export function isEtcdTimeout(error: unknown): boolean {
  return error instanceof GRPCDeadlineExceededError;
}

/** Why a VNI must not be used with this group base, or undefined if it may. */
export function reservedVniProblem(groupBase: GroupBase, vni: number): string | undefined {
  const group = groupFor(groupBase, vni);
  const reason = reservedGroupReason(group);
  if (!reason) return undefined;
  return `VNI ${vniHex(vni)} maps to multicast group ${group.text}, which is reserved (${reason}); choose another VNI`;
}

/** The spec vxnetctl writes, checked by the same parser the agent uses so it can never write what the agent rejects. */
export function specFor(request: Omit<CreateRequest, 'vni' | 'groupBase'>): NetworkSpec {
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

/**
 * Creates a network: at the requested VNI, or at the lowest free VNI whose
 * multicast group is not reserved. With an owner, that owner's existing
 * network is returned instead (created: false), also under concurrency.
 */
export async function createNetwork(client: Etcd3, schema: EtcdSchema, request: CreateRequest): Promise<CreateResult> {
  const spec = specFor(request);
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
    if (owned && 'existing' in owned) return { network: sameVniOrThrow(owned.existing, request), created: false };

    const taken = takenVnis(listing);
    if (request.vni !== undefined && taken.has(request.vni)) {
      throw new ConflictError(`network ${vniHex(request.vni)} already exists; choose another --vni or omit it to allocate one`);
    }
    const vni = request.vni ?? lowestFreeVni(taken, request.groupBase);
    const key = schema.networkKey(vni);
    const transaction = client.if(key, 'Create', '==', 0);
    const writes = [client.put(key).value(serializeSpec(spec))];
    if (owned) {
      const { key: ownerKey, column, expected } = owned.claim;
      transaction.and(ownerKey, column, '==', expected);
      writes.push(client.put(ownerKey).value(serializeOwnerIndex(vni)));
    }
    const result = await transaction.then(...writes).commit();
    if (result.succeeded) return { network: { vni, hex: vniHex(vni), spec }, created: true };
    // Lost a race for the VNI or the owner: the next attempt's fresh reads see the winner.
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

function sameVniOrThrow(existing: Network, request: CreateRequest): Network {
  if (request.vni !== undefined && request.vni !== existing.vni) {
    throw new ConflictError(
      `owner ${JSON.stringify(request.owner)} already has network ${existing.hex}, not ${vniHex(request.vni)}; omit --vni or use another owner`,
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

/** Deletes a network and, in the same transaction, the owner index key that points at it. */
export async function deleteNetwork(client: Etcd3, schema: EtcdSchema, vni: number): Promise<void> {
  const key = schema.networkKey(vni);
  const hex = vniHex(vni);
  const stored = await readKey(client, key);
  if (!stored) throw new NotFoundError(`network ${hex} does not exist (key ${key})`);
  const parsed = parseSpec(stored.value);
  const owner = parsed.ok ? parsed.spec.owner : undefined;
  const deleteNetworkKey = client.delete().key(key);
  let deleted: string;
  if (owner === undefined) {
    deleted = (await deleteNetworkKey.exec()).deleted;
  } else {
    const ownerKey = schema.ownerKey(owner);
    const result = await client
      .if(ownerKey, 'Value', '==', serializeOwnerIndex(vni))
      .then(deleteNetworkKey, client.delete().key(ownerKey))
      .else(deleteNetworkKey)
      .commit();
    deleted = result.responses[0]!.response_delete_range.deleted;
  }
  if (deleted === '0') throw new NotFoundError(`network ${hex} does not exist (deleted concurrently)`);
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

async function readHostKeys(client: Etcd3, schema: EtcdSchema, host?: string): Promise<{ hostKeys: HostKey[]; invalid: InvalidEntry[] }> {
  const hostKeys: HostKey[] = [];
  const invalid: InvalidEntry[] = [];
  for (const kv of await readPrefix(client, host === undefined ? schema.hostsDir : schema.hostDir(host))) {
    const key = kv.key.toString();
    const parsed = schema.parseKey(key);
    if (parsed.kind === 'agent' || parsed.kind === 'attachment' || parsed.kind === 'status') hostKeys.push({ ...parsed, kv });
    else invalid.push({ key, reason: parsed.kind === 'invalid' ? parsed.reason : `not a host key` });
  }
  return { hostKeys, invalid };
}

async function readKey(client: Etcd3, key: string): Promise<IKeyValue | undefined> {
  const response = await client.get(key).exec();
  return response.kvs[0];
}
