/**
 * Control-plane operations on the etcd data model (DESIGN.md §1), as used by
 * vxnetctl. Every function takes a client and the key prefix (e.g. `/v1`).
 *
 * Besides the contract keys this module owns one key family of its own:
 *
 *   <prefix>/owners/<sha256(owner) in hex>  →  the VNI hex of that owner's network
 *
 * It is written only by vxnetctl, in the same transaction as the network key,
 * so that concurrent `network create --owner X` calls cannot both create a
 * network (the second one's Create==0 on the owner key fails). The owner is
 * hashed because it is free text (it may contain '/'). The index is only a
 * hint: the network's own `owner` field is the truth, and an index key that
 * points at a missing or re-owned network is treated as stale and replaced.
 * vxnetd never reads it.
 */
import { createHash } from 'node:crypto';
import { GRPCDeadlineExceededError, GRPCUnavailableError, type Etcd3, type IKeyValue } from 'etcd3';
import { groupFor, reservedGroupReason, type GroupBase } from '../model/group.js';
import { parseNetworkSpec, type NetworkSpec } from '../model/spec.js';
import { parseVniHex, vniHex, VNI_MAX, VNI_MIN } from '../model/vni.js';

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

export function networkKey(prefix: string, vni: number): string {
  return `${prefix}/networks/${vniHex(vni)}`;
}

export function attachmentKey(prefix: string, host: string, vni: number): string {
  return `${prefix}/hosts/${checkedHostname(host)}/networks/${vniHex(vni)}`;
}

export function ownerIndexKey(prefix: string, owner: string): string {
  return `${prefix}/owners/${createHash('sha256').update(owner, 'utf8').digest('hex')}`;
}

/** Why a host name cannot be used inside a key, or undefined if it can. */
export function hostnameProblem(host: string): string | undefined {
  if (host === '') return 'host name must not be empty';
  if (host.includes('/')) return `host name ${JSON.stringify(host)} must not contain '/'`;
  return undefined;
}

function checkedHostname(host: string): string {
  const problem = hostnameProblem(host);
  if (problem) throw new RangeError(problem);
  return host;
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
  const checked = parseNetworkSpec(encodeSpec(spec));
  if (!checked.ok) throw new RangeError(checked.error.message);
  return spec;
}

function encodeSpec(spec: NetworkSpec): Buffer {
  return Buffer.from(JSON.stringify(spec));
}

export async function listNetworks(client: Etcd3, prefix: string): Promise<NetworkListing> {
  const directory = `${prefix}/networks/`;
  const response = await client.getAll().prefix(directory).exec();
  const listing: NetworkListing = { networks: [], invalid: [] };
  for (const kv of response.kvs) {
    const parsed = parseNetworkEntry(kv.key.toString(), directory, kv.value);
    if ('spec' in parsed) listing.networks.push(parsed);
    else listing.invalid.push(parsed);
  }
  listing.networks.sort((a, b) => a.vni - b.vni);
  return listing;
}

function parseNetworkEntry(key: string, directory: string, value: Buffer): Network | InvalidEntry {
  const hex = key.slice(directory.length);
  const vni = parseVniHex(hex);
  if (vni === undefined) {
    return { key, reason: `${JSON.stringify(hex)} is not a canonical VNI (lowercase hex without leading zeros, 1…ffffff)` };
  }
  const parsed = parseNetworkSpec(value);
  if (!parsed.ok) return { key, vni, reason: parsed.error.message };
  return { vni, hex, spec: parsed.spec };
}

export async function getNetwork(client: Etcd3, prefix: string, vni: number): Promise<Network> {
  const key = networkKey(prefix, vni);
  const value = await client.get(key).buffer();
  if (value === null) throw new NotFoundError(`network ${vniHex(vni)} does not exist (key ${key})`);
  const parsed = parseNetworkEntry(key, `${prefix}/networks/`, value);
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
export async function createNetwork(client: Etcd3, prefix: string, request: CreateRequest): Promise<CreateResult> {
  const spec = specFor(request);
  if (request.vni !== undefined) {
    const problem = reservedVniProblem(request.groupBase, request.vni);
    if (problem) throw new RangeError(problem);
  }
  const ownerIndex = request.owner === undefined ? undefined : { owner: request.owner, key: ownerIndexKey(prefix, request.owner) };
  for (let attempt = 1; attempt <= MAX_CREATE_ATTEMPTS; attempt++) {
    // The owner index is read before the networks: a claim committed after
    // this read fails our comparison, one committed before it is in the listing.
    const indexed = ownerIndex && (await readKey(client, ownerIndex.key));
    const listing = await listNetworks(client, prefix);
    const owned = ownerIndex && findOwnedNetwork(ownerIndex, indexed, listing);
    if (owned && 'existing' in owned) return { network: sameVniOrThrow(owned.existing, request), created: false };

    const taken = takenVnis(listing);
    if (request.vni !== undefined && taken.has(request.vni)) {
      throw new ConflictError(`network ${vniHex(request.vni)} already exists; choose another --vni or omit it to allocate one`);
    }
    const vni = request.vni ?? lowestFreeVni(taken, request.groupBase);
    const key = networkKey(prefix, vni);
    const hex = vniHex(vni);
    const transaction = client.if(key, 'Create', '==', 0);
    const writes = [client.put(key).value(encodeSpec(spec))];
    if (owned) {
      const { key: ownerKey, column, expected } = owned.claim;
      transaction.and(ownerKey, column, '==', expected);
      writes.push(client.put(ownerKey).value(hex));
    }
    const result = await transaction.then(...writes).commit();
    if (result.succeeded) return { network: { vni, hex, spec }, created: true };
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
  const indexedVni = indexed ? parseVniHex(indexed.value.toString()) : undefined;
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
export async function deleteNetwork(client: Etcd3, prefix: string, vni: number): Promise<void> {
  const key = networkKey(prefix, vni);
  const hex = vniHex(vni);
  const stored = await readKey(client, key);
  if (!stored) throw new NotFoundError(`network ${hex} does not exist (key ${key})`);
  const parsed = parseNetworkSpec(stored.value);
  const owner = parsed.ok ? parsed.spec.owner : undefined;
  const deleteNetworkKey = client.delete().key(key);
  let deleted: string;
  if (owner === undefined) {
    deleted = (await deleteNetworkKey.exec()).deleted;
  } else {
    const ownerKey = ownerIndexKey(prefix, owner);
    const result = await client
      .if(ownerKey, 'Value', '==', hex)
      .then(deleteNetworkKey, client.delete().key(ownerKey))
      .else(deleteNetworkKey)
      .commit();
    deleted = result.responses[0]!.response_delete_range.deleted;
  }
  if (deleted === '0') throw new NotFoundError(`network ${hex} does not exist (deleted concurrently)`);
}

/** Attaches a host to an existing network; false if it was already attached (its value is kept). */
export async function attachHost(client: Etcd3, prefix: string, host: string, vni: number): Promise<boolean> {
  const network = networkKey(prefix, vni);
  const attachment = attachmentKey(prefix, host, vni);
  const result = await client
    .if(network, 'Create', '>', 0)
    .and(attachment, 'Create', '==', 0)
    .then(client.put(attachment).value('{}'))
    .else(client.get(network))
    .commit();
  if (result.succeeded) return true;
  if (result.responses[0]!.response_range.kvs.length === 0) {
    throw new NotFoundError(`network ${vniHex(vni)} does not exist; create it before attaching hosts`);
  }
  return false;
}

export async function detachHost(client: Etcd3, prefix: string, host: string, vni: number): Promise<void> {
  const { deleted } = await client.delete().key(attachmentKey(prefix, host, vni)).exec();
  if (deleted === '0') throw new NotFoundError(`host ${host} is not attached to network ${vniHex(vni)}`);
}

/** Hosts that have an attachment for this network, sorted. */
export async function attachedHosts(client: Etcd3, prefix: string, vni: number): Promise<string[]> {
  const { hostKeys } = await readHostKeys(client, prefix);
  const hex = vniHex(vni);
  return hostKeys
    .filter((entry) => entry.kind === 'networks' && entry.hex === hex)
    .map((entry) => entry.host)
    .sort();
}

export interface HostNetworkStatus {
  vni: number;
  hex: string;
  attached: boolean;
  /** The agent's status value (DESIGN.md §1), undefined until the agent has written one. */
  status?: Record<string, unknown>;
}

export interface HostStatus {
  host: string;
  /** The agent's liveness value; undefined when its lease has expired or it never ran. */
  agent?: Record<string, unknown>;
  networks: HostNetworkStatus[];
}

export interface StatusReport {
  hosts: HostStatus[];
  invalid: InvalidEntry[];
}

/** Agent liveness, attachments and per-network status of every host, or of one host. */
export async function readStatus(client: Etcd3, prefix: string, host?: string): Promise<StatusReport> {
  const { hostKeys, invalid } = await readHostKeys(client, prefix, host);
  const hosts = new Map<string, HostStatus>();
  const hostStatus = (name: string) => {
    let entry = hosts.get(name);
    if (!entry) hosts.set(name, (entry = { host: name, networks: [] }));
    return entry;
  };
  const networkStatus = (name: string, vni: number, hex: string) => {
    const networks = hostStatus(name).networks;
    let entry = networks.find((network) => network.vni === vni);
    if (!entry) networks.push((entry = { vni, hex, attached: false }));
    return entry;
  };
  for (const entry of hostKeys) {
    if (entry.kind === 'agent') {
      const value = parseJsonObject(entry.kv.value);
      if (typeof value === 'string') invalid.push({ key: entry.kv.key.toString(), reason: value });
      else hostStatus(entry.host).agent = value;
    } else if (entry.kind === 'networks') {
      networkStatus(entry.host, entry.vni, entry.hex).attached = true;
    } else {
      const value = parseJsonObject(entry.kv.value);
      if (typeof value === 'string') invalid.push({ key: entry.kv.key.toString(), vni: entry.vni, reason: value });
      else networkStatus(entry.host, entry.vni, entry.hex).status = value;
    }
  }
  const sorted = [...hosts.values()].sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0));
  for (const entry of sorted) entry.networks.sort((a, b) => a.vni - b.vni);
  return { hosts: sorted, invalid };
}

type HostKey =
  | { kind: 'agent'; host: string; kv: IKeyValue }
  | { kind: 'networks' | 'status'; host: string; vni: number; hex: string; kv: IKeyValue };

async function readHostKeys(
  client: Etcd3,
  prefix: string,
  host?: string,
): Promise<{ hostKeys: HostKey[]; invalid: InvalidEntry[] }> {
  const directory = `${prefix}/hosts/`;
  const response = await client
    .getAll()
    .prefix(host === undefined ? directory : `${directory}${checkedHostname(host)}/`)
    .exec();
  const hostKeys: HostKey[] = [];
  const invalid: InvalidEntry[] = [];
  for (const kv of response.kvs) {
    const key = kv.key.toString();
    const [name = '', kind, hex, ...rest] = key.slice(directory.length).split('/');
    if (kind === 'agent' && hex === undefined) {
      hostKeys.push({ kind, host: name, kv });
      continue;
    }
    const vni = hex === undefined ? undefined : parseVniHex(hex);
    if ((kind === 'networks' || kind === 'status') && vni !== undefined && rest.length === 0) {
      hostKeys.push({ kind, host: name, vni, hex: hex!, kv });
    } else {
      invalid.push({ key, reason: 'not a key of the data model (expected agent, networks/<vni-hex> or status/<vni-hex>)' });
    }
  }
  return { hostKeys, invalid };
}

/** The JSON object, or why the value is not one. */
function parseJsonObject(value: Buffer): Record<string, unknown> | string {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch (error) {
    return `value is not valid JSON: ${(error as Error).message}`;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return 'value is not a JSON object';
  return parsed as Record<string, unknown>;
}

async function readKey(client: Etcd3, key: string): Promise<IKeyValue | undefined> {
  const response = await client.get(key).exec();
  return response.kvs[0];
}
