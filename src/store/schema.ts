/**
 * The etcd data model (DESIGN.md §1) as code: every key vxnetd and vxnetctl read or write is built
 * and parsed here and nowhere else, and every value under them has a type, a serializer and a
 * parser. Pure: no etcd client, no I/O.
 *
 *   <prefix>/networks/<hex>                  network spec (parsed by model/spec.ts)
 *   <prefix>/hosts/<host>/networks/<hex>     attachment: any JSON object
 *   <prefix>/hosts/<host>/status/<hex>       NetworkStatus, written by the agent on <host>
 *   <prefix>/hosts/<host>/agent              AgentLiveness, bound to the agent's lease
 *   <prefix>/owners/<sha256(owner) in hex>   vxnetctl's owner index: the VNI hex of that owner's network
 *   <prefix>/deleted/<hex>                   DeletedNetwork: vxnetctl's quarantine record of a deleted VNI
 *   <prefix>/settings                        CloudSettings: cloud-wide settings (the multicast group base, the quarantine)
 *   <prefix>/members/<hex>/<host>            FloodMember: <host> carries the network, reachable at this underlay address
 *   <prefix>/ipam/<hex>                      IpamEntry: the routed network's /64 and name servers (DESIGN.md §8)
 *   <prefix>/ipam-prefixes/<address>         IPAM index: the VNI hex of the network that holds the /64 at <address>
 *   <prefix>/ipam-pool                       IpamPool: the cloud-wide pool the /64s are allocated from
 *
 * The owner index is vxnetctl's own (vxnetd never reads it): written in the same transaction as
 * the network key, so that concurrent `network create --owner X` cannot both create a network.
 * The owner is hashed because it is free text (it may contain '/').
 *
 * The members index is network-first (unlike hosts/), so that an agent can list and watch the
 * hosts of one network — what unicast flooding needs — without reading every host's keys.
 *
 * IPAM is separate from networks (a pure layer-2 network has none) and, like the owner index, the
 * IPAM index exists so that a transaction can compare it: "this /64 is free" is the absence of one
 * key. Its name is the /64's first address in RFC 5952 form (`2001:db8:100:1::`), one key segment,
 * the length being always 64; a name that is not exactly that form is invalid, as for VNIs.
 */
import { createHash } from 'node:crypto';
import { parseGroupBase } from '../model/group.js';
import { parseAttachment as checkAttachment, parseNetworkSpec, type NetworkSpec, type SpecResult } from '../model/spec.js';
import { nonCanonicalVniReason, parseVniHex, vniHex } from '../model/vni.js';
import type { IpamReport } from '../model/ipam-availability.js';
import { formatIpv6, parseDnsServers, parsePool, parseSubnet, SUBNET_LENGTH, type Ipv6Prefix } from '../model/ipv6-prefix.js';

// ---- host names ----

export const HOSTNAME_MAX = 253;
const HOSTNAME_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;

/**
 * Why `host` cannot be a host name in a key, or undefined if it can. The rule is RFC 1123's
 * (what os.hostname() returns on a systemd host, and any DNS name): exactly one key segment, and
 * nothing a shell, a table or a log line could mistake. Case is kept, never folded: the key must
 * be the one the scheduler writes.
 */
export function hostnameProblem(host: string): string | undefined {
  if (host.length <= HOSTNAME_MAX && host.split('.').every((label) => HOSTNAME_LABEL.test(label))) return undefined;
  return (
    `host name ${JSON.stringify(host)} is not valid: use letters, digits and inner hyphens, ` +
    `in dot-separated labels of 1…63 characters, at most ${HOSTNAME_MAX} in all`
  );
}

function checkedHostname(host: string): string {
  const problem = hostnameProblem(host);
  if (problem) throw new RangeError(problem);
  return host;
}

/** A VNI, or its hex form as it appears in keys (which must then be canonical). */
export type VniRef = number | string;

function hexOf(vni: VniRef): string {
  if (typeof vni === 'number') return vniHex(vni);
  if (parseVniHex(vni) === undefined) throw new RangeError(nonCanonicalVniReason(vni));
  return vni;
}

// ---- keys ----

export type ParsedKey =
  | { kind: 'network'; vni: number; hex: string }
  | { kind: 'attachment' | 'status'; host: string; vni: number; hex: string }
  | { kind: 'agent'; host: string }
  | { kind: 'owner'; digest: string }
  | { kind: 'deleted'; vni: number; hex: string }
  | { kind: 'member'; vni: number; hex: string; host: string }
  | { kind: 'data-id' }
  | { kind: 'settings' }
  | { kind: 'ipam'; vni: number; hex: string }
  /** `subnet` is the /64 in RFC 5952 form with its length (`2001:db8:100:1::/64`). */
  | { kind: 'ipam-prefix'; subnet: string }
  | { kind: 'ipam-pool' }
  | { kind: 'router'; number: number }
  /** Not a key of the data model, and why. */
  | { kind: 'invalid'; reason: string };

const OWNER_DIGEST = /^[0-9a-f]{64}$/;

/** The keys under one prefix (e.g. `/v1`, as checked by the --prefix flag). */
export class EtcdSchema {
  readonly networksDir: string;
  readonly hostsDir: string;
  readonly ownersDir: string;
  readonly deletedDir: string;
  readonly membersDir: string;
  readonly ipamDir: string;
  readonly ipamPrefixesDir: string;
  readonly routersDir: string;

  constructor(readonly prefix: string) {
    this.networksDir = `${prefix}/networks/`;
    this.hostsDir = `${prefix}/hosts/`;
    this.ownersDir = `${prefix}/owners/`;
    this.deletedDir = `${prefix}/deleted/`;
    this.membersDir = `${prefix}/members/`;
    this.ipamDir = `${prefix}/ipam/`;
    this.ipamPrefixesDir = `${prefix}/ipam-prefixes/`;
    this.routersDir = `${prefix}/routers/`;
  }

  /**
   * The hosts that carry one network: each agent writes its own key (no lease — a stopped or killed
   * agent's host keeps its VMs and so stays a flood destination) when the network is wanted on its
   * host, and deletes it when it no longer is; `vxnetctl host remove` deletes a host's keys.
   */
  membersOf(vni: VniRef): string {
    return `${this.membersDir}${hexOf(vni)}/`;
  }

  memberKey(vni: VniRef, host: string): string {
    return this.membersOf(vni) + checkedHostname(host);
  }

  networkKey(vni: VniRef): string {
    return this.networksDir + hexOf(vni);
  }

  /** Every key of one host: its liveness, attachments and statuses. */
  hostDir(host: string): string {
    return `${this.hostsDir}${checkedHostname(host)}/`;
  }

  attachmentsDir(host: string): string {
    return `${this.hostDir(host)}networks/`;
  }

  attachmentKey(host: string, vni: VniRef): string {
    return this.attachmentsDir(host) + hexOf(vni);
  }

  statusesDir(host: string): string {
    return `${this.hostDir(host)}status/`;
  }

  statusKey(host: string, vni: VniRef): string {
    return this.statusesDir(host) + hexOf(vni);
  }

  agentKey(host: string): string {
    return `${this.hostDir(host)}agent`;
  }

  /**
   * The id of this etcd's data under the prefix (`{"id":"<16 hex digits>"}`), made once, at random,
   * by the first agent that finds it missing. Devices record it in their alias (model/identity.ts):
   * an agent pointed at another etcd, even a fresh one whose cluster id repeats the old one's, finds
   * another id and leaves the devices alone.
   */
  get dataIdKey(): string {
    return `${this.prefix}/data-id`;
  }

  /**
   * The quarantine record of a deleted network's VNI, written by `vxnetctl network delete` in the
   * delete's own transaction. vxnetctl does not hand the VNI to a new network until the record is
   * older than the quarantine (CloudSettings.quarantineSeconds): an agent that was stopped
   * meanwhile must not find another tenant's network under the VNI its VMs are still plugged into.
   * vxnetd never reads it.
   */
  deletedKey(vni: VniRef): string {
    return this.deletedDir + hexOf(vni);
  }

  /** Cloud-wide settings (CloudSettings), written by `vxnetctl settings set`. */
  get settingsKey(): string {
    return `${this.prefix}/settings`;
  }

  /** A network's IPAM entry (IpamEntry), written by `vxnetctl ipam create` after the network exists. */
  ipamKey(vni: VniRef): string {
    return this.ipamDir + hexOf(vni);
  }

  /** The IPAM index key of a /64: present while a network holds it, so two can never take it. */
  ipamPrefixKey(subnet: Ipv6Prefix): string {
    if (subnet.length !== SUBNET_LENGTH) throw new RangeError(`IPAM prefixes are /${SUBNET_LENGTH}s, got ${subnet.text}`);
    return this.ipamPrefixesDir + formatIpv6(subnet.address);
  }

  /**
   * The pool (IpamPool), a key of its own rather than a field of the settings: every IPAM create
   * compares it, and it alone, so that an allocation never lands outside a pool changed meanwhile;
   * a field of the settings would make every `settings set` fail concurrent creates, and creates
   * would have to keep the settings' other fields in step.
   */
  /**
   * A router's number (RouterClaim), decimal 1 … 65535: the router takes `<prefix>::<number in
   * hex>` in every routed network, so the numbers of a cloud's routers must differ and must not
   * change across restarts. Claimed once by the router's agent (create-if-absent).
   */
  routerKey(number: number): string {
    if (!Number.isInteger(number) || number < ROUTER_NUMBER_MIN || number > ROUTER_NUMBER_MAX) throw new RangeError(routerNumberProblem(String(number)));
    return `${this.routersDir}${number}`;
  }

  get ipamPoolKey(): string {
    return `${this.prefix}/ipam-pool`;
  }

  ownerKey(owner: string): string {
    return this.ownersDir + createHash('sha256').update(owner, 'utf8').digest('hex');
  }

  /**
   * The name of `key` inside `dir` (one of this schema's directories), as written: a network
   * directory's names are kept even when they are not canonical VNIs, so the agent can report them.
   */
  nameIn(dir: string, key: string): string {
    if (!key.startsWith(dir)) throw new RangeError(`key ${JSON.stringify(key)} is not under ${dir}`);
    return key.slice(dir.length);
  }

  parseKey(key: string): ParsedKey {
    const vniKey = (hex: string) => {
      const vni = parseVniHex(hex);
      return vni === undefined ? undefined : { vni, hex };
    };
    if (key.startsWith(this.networksDir)) {
      const hex = key.slice(this.networksDir.length);
      const named = vniKey(hex);
      return named ? { kind: 'network', ...named } : { kind: 'invalid', reason: nonCanonicalVniReason(hex) };
    }
    if (key.startsWith(this.ownersDir)) {
      const digest = key.slice(this.ownersDir.length);
      return OWNER_DIGEST.test(digest) ? { kind: 'owner', digest } : { kind: 'invalid', reason: 'not an owner index key (expected a SHA-256 in hex)' };
    }
    if (key.startsWith(this.deletedDir)) {
      const hex = key.slice(this.deletedDir.length);
      const named = vniKey(hex);
      return named ? { kind: 'deleted', ...named } : { kind: 'invalid', reason: nonCanonicalVniReason(hex) };
    }
    if (key.startsWith(this.membersDir)) {
      const [hex = '', host, ...rest] = key.slice(this.membersDir.length).split('/');
      const named = vniKey(hex);
      if (!named) return { kind: 'invalid', reason: nonCanonicalVniReason(hex) };
      if (host === undefined || rest.length) return { kind: 'invalid', reason: 'not a member key (expected members/<vni-hex>/<host>)' };
      const problem = hostnameProblem(host);
      return problem ? { kind: 'invalid', reason: problem } : { kind: 'member', ...named, host };
    }
    if (key.startsWith(this.ipamDir)) {
      const hex = key.slice(this.ipamDir.length);
      const named = vniKey(hex);
      return named ? { kind: 'ipam', ...named } : { kind: 'invalid', reason: nonCanonicalVniReason(hex) };
    }
    if (key.startsWith(this.ipamPrefixesDir)) {
      const name = key.slice(this.ipamPrefixesDir.length);
      const subnet = canonicalSubnetName(name);
      return subnet
        ? { kind: 'ipam-prefix', subnet: subnet.text }
        : { kind: 'invalid', reason: `${JSON.stringify(name)} is not an IPAM index name: the first address of a /${SUBNET_LENGTH} in RFC 5952 form, e.g. 2001:db8:100:1::` };
    }
    if (key === this.ipamPoolKey) return { kind: 'ipam-pool' };
    if (key.startsWith(this.routersDir)) {
      const text = key.slice(this.routersDir.length);
      const number = parseRouterNumber(text);
      return number === undefined ? { kind: 'invalid', reason: routerNumberProblem(text) } : { kind: 'router', number };
    }
    if (key.startsWith(this.hostsDir)) {
      const [host = '', kind, hex, ...rest] = key.slice(this.hostsDir.length).split('/');
      const problem = hostnameProblem(host);
      if (problem) return { kind: 'invalid', reason: problem };
      if (kind === 'agent' && hex === undefined) return { kind: 'agent', host };
      if ((kind === 'networks' || kind === 'status') && hex !== undefined && rest.length === 0) {
        const named = vniKey(hex);
        if (!named) return { kind: 'invalid', reason: nonCanonicalVniReason(hex) };
        return { kind: kind === 'networks' ? 'attachment' : 'status', host, ...named };
      }
      return { kind: 'invalid', reason: 'not a key of the data model (expected agent, networks/<vni-hex> or status/<vni-hex>)' };
    }
    if (key === this.dataIdKey) return { kind: 'data-id' };
    if (key === this.settingsKey) return { kind: 'settings' };
    return { kind: 'invalid', reason: `not a key of the data model under ${this.prefix}/` };
  }
}

/** The /64 an IPAM index name stands for, if the name is its canonical one. */
function canonicalSubnetName(name: string): Ipv6Prefix | undefined {
  if (name.includes('/')) return undefined;
  try {
    const subnet = parseSubnet(`${name}/${SUBNET_LENGTH}`);
    return formatIpv6(subnet.address) === name ? subnet : undefined;
  } catch {
    return undefined;
  }
}

// ---- values ----

const DATA_ID = /^[0-9a-f]{16}$/;

export function newDataId(random: (bytes: number) => Buffer): string {
  return random(8).toString('hex');
}

export function serializeDataId(id: string): string {
  return JSON.stringify({ id });
}

export function parseDataId(value: Uint8Array): Parsed<string> {
  try {
    const id = (JSON.parse(Buffer.from(value).toString('utf8')) as { id?: unknown }).id;
    if (typeof id === 'string' && DATA_ID.test(id)) return { ok: true, value: id };
  } catch {
    // Reported below.
  }
  return { ok: false, reason: 'the data id must be {"id":"<16 lowercase hex digits>"}' };
}

export type Parsed<T> = { ok: true; value: T } | { ok: false; reason: string };

/** The status vxnetd writes per network (DESIGN.md §1). */
export interface NetworkStatus {
  state: 'ready' | 'error';
  reason?: string;
  vxlan: string;
  bridge: string;
  mtu?: number;
  /** The etcd mod_revision of the spec applied. */
  specRevision?: number;
  /** Unicast flooding: the other hosts this host floods the network's broadcast and unknown traffic to. */
  floodPeers?: number;
  /** ISO time. */
  updatedAt: string;
  /** Routers only, for networks with IPAM: what this router does with the IPAM entry (DESIGN.md §8). */
  ipam?: IpamReport;
}

/** The agent's liveness value, under its lease (DESIGN.md §1). */
export interface AgentLiveness {
  version: string;
  pid: number;
  startedAt: string;
  underlay: string;
  /** Absent while the underlay has no address. */
  underlayAddress?: string;
  ready: boolean;
  /**
   * `"router"` for `vxnetd --role router`, whose reports decide when IPAM is available; absent for
   * every other agent (other values are kept but mean no role vxnetctl knows).
   */
  role?: string;
}

/** An attachment's value: any JSON object (`{}` is fine). */
export type Attachment = Record<string, unknown>;

export function serializeSpec(spec: NetworkSpec): string {
  return JSON.stringify(spec);
}

export function parseSpec(value: Uint8Array): SpecResult {
  return parseNetworkSpec(value);
}

/** Fields in a fixed order, so equal statuses serialize to equal text. */
export function serializeStatus(status: NetworkStatus): string {
  const { state, reason, vxlan, bridge, mtu, specRevision, floodPeers, updatedAt, ipam } = status;
  return JSON.stringify({ state, reason, vxlan, bridge, mtu, specRevision, floodPeers, updatedAt, ipam: ipam && serializedIpamReport(ipam) });
}

export function parseStatus(value: Uint8Array): Parsed<NetworkStatus> {
  return parseObject(value, (fields) => {
    const state = fields.state;
    if (state !== 'ready' && state !== 'error') throw new ValueError(`state must be "ready" or "error", got ${shown(state)}`);
    return {
      state,
      ...optional(fields, 'reason', 'string'),
      vxlan: required(fields, 'vxlan', 'string'),
      bridge: required(fields, 'bridge', 'string'),
      ...optional(fields, 'mtu', 'integer'),
      ...optional(fields, 'specRevision', 'integer'),
      ...optional(fields, 'floodPeers', 'integer'),
      updatedAt: required(fields, 'updatedAt', 'string'),
      ...(fields.ipam === undefined ? {} : { ipam: parseIpamReport(fields.ipam) }),
    };
  });
}

function serializedIpamReport({ revision, prefix, reason }: IpamReport): IpamReport {
  return { revision, prefix, reason };
}

function parseIpamReport(value: unknown): IpamReport {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new ValueError(`ipam must be an object, got ${shown(value)}`);
  const fields = value as Record<string, unknown>;
  const revision = required(fields, 'revision', 'integer');
  const report = { revision, ...optional(fields, 'prefix', 'string'), ...optional(fields, 'reason', 'string') };
  if (report.prefix === undefined && report.reason === undefined) throw new ValueError('ipam needs a prefix or a reason');
  return report;
}

export function serializeLiveness(liveness: AgentLiveness): string {
  const { version, pid, startedAt, underlay, underlayAddress, ready, role } = liveness;
  return JSON.stringify({ version, pid, startedAt, underlay, underlayAddress, ready, role });
}

export function parseLiveness(value: Uint8Array): Parsed<AgentLiveness> {
  return parseObject(value, (fields) => ({
    version: required(fields, 'version', 'string'),
    pid: required(fields, 'pid', 'integer'),
    startedAt: required(fields, 'startedAt', 'string'),
    underlay: required(fields, 'underlay', 'string'),
    ...optional(fields, 'underlayAddress', 'string'),
    ready: required(fields, 'ready', 'boolean'),
    ...optional(fields, 'role', 'string'),
  }));
}

export function serializeAttachment(attachment: Attachment = {}): string {
  return JSON.stringify(attachment);
}

/** Held to the agent's size bound (model/spec.ts), so that vxnetctl reports an attachment the agent refuses. */
export function parseAttachment(value: Uint8Array): Parsed<Attachment> {
  const refused = checkAttachment(value);
  if (refused?.code === 'too_large') return { ok: false, reason: refused.message };
  return parseObject(value, (fields) => fields);
}

export function serializeOwnerIndex(vni: number): string {
  return vniHex(vni);
}

/** The VNI an owner index key points at; undefined for anything else (the index is only a hint). */
export function parseOwnerIndex(value: Uint8Array): number | undefined {
  return parseVniHex(Buffer.from(value).toString('utf8'));
}

/** A members index value (EtcdSchema.memberKey): where the host's vxlans receive. */
export interface FloodMember {
  /** The host's underlay address, as the agent publishes it (IPv6 or IPv4 text). */
  address: string;
}

export function serializeMember({ address }: FloodMember): string {
  return JSON.stringify({ address });
}

export function parseMember(value: Uint8Array): Parsed<FloodMember> {
  return parseObject(value, (fields) => ({ address: required(fields, 'address', 'string') }));
}

/** A quarantine record (EtcdSchema.deletedKey). */
export interface DeletedNetwork {
  /** ISO time of the delete. */
  deletedAt: string;
  /** The deleted network's owner, if it had one: who may have VMs still plugged in somewhere. */
  owner?: string;
}

export function serializeDeletedNetwork({ deletedAt, owner }: DeletedNetwork): string {
  return JSON.stringify({ deletedAt, owner });
}

export function parseDeletedNetwork(value: Uint8Array): Parsed<DeletedNetwork> {
  return parseObject(value, (fields) => {
    const deletedAt = required(fields, 'deletedAt', 'string');
    if (Number.isNaN(Date.parse(deletedAt))) throw new ValueError(`deletedAt must be an ISO time, got ${shown(deletedAt)}`);
    return { deletedAt, ...optional(fields, 'owner', 'string') };
  });
}

/**
 * Cloud-wide settings (EtcdSchema.settingsKey). `groupBase` is the multicast group base every
 * vxnetd uses (its --group-base): vxnetctl allocates no VNI whose group would be reserved under it.
 * `quarantineSeconds` is how long a deleted network's VNI is not handed out again (see
 * EtcdSchema.deletedKey): one value for every vxnetctl, wherever it runs.
 * Unknown fields are kept by whoever rewrites the value (forward compatibility).
 */
export interface CloudSettings {
  /** Canonical text of the group base, as parseGroupBase() prints it. */
  groupBase?: string;
  quarantineSeconds?: number;
  [field: string]: unknown;
}

/**
 * Bounds of a quarantine: shorter than an hour would not outlast an agent restarted for
 * maintenance; longer than a year keeps VNIs away for nothing (there are 16 million).
 */
export const QUARANTINE_MIN_SECONDS = 3600;
export const QUARANTINE_MAX_SECONDS = 8760 * 3600;

export function serializeSettings(settings: CloudSettings): string {
  return JSON.stringify(settings);
}

export function parseSettings(value: Uint8Array): Parsed<CloudSettings> {
  return parseObject(value, (fields) => {
    const settings: CloudSettings = { ...fields };
    const groupBase = optional(fields, 'groupBase', 'string').groupBase;
    if (groupBase !== undefined) {
      try {
        settings.groupBase = parseGroupBase(groupBase).text;
      } catch (error) {
        throw new ValueError(`groupBase: ${(error as Error).message}`);
      }
    }
    const quarantine = optional(fields, 'quarantineSeconds', 'integer').quarantineSeconds;
    if (quarantine !== undefined && (quarantine < QUARANTINE_MIN_SECONDS || quarantine > QUARANTINE_MAX_SECONDS)) {
      throw new ValueError(`quarantineSeconds must be between ${QUARANTINE_MIN_SECONDS} (1h) and ${QUARANTINE_MAX_SECONDS} (8760h), got ${quarantine}`);
    }
    return settings;
  });
}

// ---- IPAM ----

/** A network's IPAM entry (EtcdSchema.ipamKey). Unknown fields are ignored, as in a spec. */
export interface IpamEntry {
  /** The network's /64, RFC 5952 form with its length. */
  prefix: string;
  /** Name servers advertised by RDNSS (RFC 5952 forms); empty for none. */
  dns: string[];
  /** ISO time of the create. */
  createdAt: string;
}

export function serializeIpamEntry({ prefix, dns, createdAt }: IpamEntry): string {
  return JSON.stringify({ prefix, dns, createdAt });
}

/** Held to what `vxnetctl ipam create` writes: an entry a router would have to refuse is reported as invalid. */
export function parseIpamEntry(value: Uint8Array): Parsed<IpamEntry> {
  return parseObject(value, (fields) => {
    const prefixText = required(fields, 'prefix', 'string');
    const dnsValue = fields.dns ?? [];
    if (!Array.isArray(dnsValue) || !dnsValue.every((server) => typeof server === 'string')) {
      throw new ValueError(`dns must be an array of strings, got ${shown(dnsValue)}`);
    }
    const createdAt = required(fields, 'createdAt', 'string');
    if (Number.isNaN(Date.parse(createdAt))) throw new ValueError(`createdAt must be an ISO time, got ${shown(createdAt)}`);
    try {
      return { prefix: parseSubnet(prefixText).text, dns: parseDnsServers(dnsValue as string[]), createdAt };
    } catch (error) {
      throw new ValueError((error as Error).message);
    }
  });
}

/** The IPAM index value: the VNI hex of the network holding the /64 (plain text, as the owner index). */
export function serializeIpamIndex(vni: number): string {
  return vniHex(vni);
}

export function parseIpamIndex(value: Uint8Array): number | undefined {
  return parseVniHex(Buffer.from(value).toString('utf8'));
}

export const ROUTER_NUMBER_MIN = 1;
export const ROUTER_NUMBER_MAX = 0xffff;

/** A router number as written in keys and flags: decimal, no leading zeros, 1 … 65535. */
export function parseRouterNumber(text: string): number | undefined {
  if (!/^[1-9][0-9]{0,4}$/.test(text)) return undefined;
  const number = Number(text);
  return number <= ROUTER_NUMBER_MAX ? number : undefined;
}

export function routerNumberProblem(text: string): string {
  return `router number ${JSON.stringify(text)} is not valid: a decimal number ${ROUTER_NUMBER_MIN} … ${ROUTER_NUMBER_MAX} without leading zeros`;
}

/** Which host holds a router number (EtcdSchema.routerKey). */
export interface RouterClaim {
  host: string;
}

export function serializeRouterClaim({ host }: RouterClaim): string {
  return JSON.stringify({ host });
}

export function parseRouterClaim(value: Uint8Array): Parsed<RouterClaim> {
  return parseObject(value, (fields) => ({ host: required(fields, 'host', 'string') }));
}

/** The cloud-wide IPAM pool (EtcdSchema.ipamPoolKey). */
export interface IpamPool {
  /** RFC 5952 form with its length, at most /64. */
  prefix: string;
}

export function serializeIpamPool({ prefix }: IpamPool): string {
  return JSON.stringify({ prefix });
}

export function parseIpamPool(value: Uint8Array): Parsed<IpamPool> {
  return parseObject(value, (fields) => {
    try {
      return { prefix: parsePool(required(fields, 'prefix', 'string')).text };
    } catch (error) {
      if (error instanceof ValueError) throw error;
      throw new ValueError((error as Error).message);
    }
  });
}

class ValueError extends Error {}

type FieldType = { string: string; integer: number; boolean: boolean };

function parseObject<T>(value: Uint8Array, build: (fields: Record<string, unknown>) => T): Parsed<T> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(value).toString('utf8'));
  } catch (error) {
    return { ok: false, reason: `value is not valid JSON: ${(error as Error).message}` };
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return { ok: false, reason: 'value is not a JSON object' };
  try {
    return { ok: true, value: build(parsed as Record<string, unknown>) };
  } catch (error) {
    if (error instanceof ValueError) return { ok: false, reason: error.message };
    throw error;
  }
}

function isType<K extends keyof FieldType>(value: unknown, type: K): value is FieldType[K] {
  return type === 'integer' ? Number.isInteger(value) : typeof value === type;
}

function required<K extends keyof FieldType>(fields: Record<string, unknown>, name: string, type: K): FieldType[K] {
  const value = fields[name];
  if (!isType(value, type)) throw new ValueError(`${name} must be ${type === 'integer' ? 'an' : 'a'} ${type}, got ${shown(value)}`);
  return value;
}

/** `{ [name]: value }` when present, `{}` when absent, so the parsed value has no undefined members. */
function optional<N extends string, K extends keyof FieldType>(fields: Record<string, unknown>, name: N, type: K): { [P in N]?: FieldType[K] } {
  if (fields[name] === undefined) return {};
  return { [name]: required(fields, name, type) } as { [P in N]?: FieldType[K] };
}

function shown(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 40)}…` : text;
}
