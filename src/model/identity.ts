/**
 * Who made a device: the interface alias of every device vxnetd creates names the network, the
 * identity of the agent that made it (etcd cluster, key prefix, host name) and the network's
 * incarnation (its etcd key's create revision):
 *
 *   vxnetd:ff01 host=hv042 etcd=cdf818194e3a8c32 prefix=/v1 net=17
 *
 * An agent changes or deletes only devices of its own identity, so that one started with a
 * mistyped prefix, a new host name or another (empty) etcd cluster cannot take a host's devices
 * for strays; and it never realises a network on the devices of an earlier network that had the
 * same VNI (the incarnations differ). Pure.
 */
import { createHash } from 'node:crypto';
import { parseVniHex } from './vni.js';

export interface AgentIdentity {
  host: string;
  /**
   * The id of the etcd cluster's data, 16 lowercase hex digits: a random id kept in etcd under
   * the prefix (store/schema.ts), made once by whoever finds it missing. Not etcd's own cluster
   * id, which a fresh single-member etcd with the usual name and peer URL repeats exactly.
   */
  etcdCluster: string;
  prefix: string;
}

/** What an alias says about its device. */
export interface AliasOwner {
  hex: string;
  /** undefined: the alias of vxnetd 0.1, exactly `vxnetd:<hex>`, which names no identity. */
  identity?: string;
  incarnation?: number;
}

const ALIAS_PREFIX = 'vxnetd:';
/** IFALIASZ is 256 bytes with the terminating NUL. */
export const MAX_ALIAS_BYTES = 255;
const SAFE_PREFIX = /^[\x21\x23-\x5b\x5d-\x7e]{1,64}$/;
const ALIAS = /^vxnetd:([0-9a-f]{1,6})(?: (\S.*) net=(\d{1,20}))?$/;

/**
 * The identity as the alias spells it. A prefix with spaces or over 64 characters is shown by
 * its hash; an identity that would not leave room in the alias, wholly by its hash.
 */
export function identityText(identity: AgentIdentity): string {
  const prefix = SAFE_PREFIX.test(identity.prefix) ? identity.prefix : `#${shortHash(identity.prefix)}`;
  const text = `host=${identity.host} etcd=${identity.etcdCluster} prefix=${prefix}`;
  // Room for "vxnetd:ffffff " and " net=" with a 20-digit revision.
  if (Buffer.byteLength(text) <= MAX_ALIAS_BYTES - 14 - 25) return text;
  return `id=${shortHash(`${identity.host}\0${identity.etcdCluster}\0${identity.prefix}`)}`;
}

export function ownerAlias(hex: string, identity: string, incarnation: number): string {
  return `${ALIAS_PREFIX}${hex} ${identity} net=${incarnation}`;
}

/** The alias vxnetd 0.1 gave every device: adopted once, in place, by the identity that wants the network. */
export function legacyAlias(hex: string): string {
  return `${ALIAS_PREFIX}${hex}`;
}

export function parseOwnerAlias(alias: string | undefined): AliasOwner | undefined {
  if (!alias?.startsWith(ALIAS_PREFIX)) return undefined;
  const match = ALIAS.exec(alias);
  if (!match || parseVniHex(match[1]!) === undefined) return undefined;
  if (match[2] === undefined) return { hex: match[1]! };
  return { hex: match[1]!, identity: match[2], incarnation: Number(match[3]) };
}

/** The VNI hex an alias claims, or undefined for devices vxnetd did not make. */
export function hexFromOwnerAlias(alias: string | undefined): string | undefined {
  return parseOwnerAlias(alias)?.hex;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}
