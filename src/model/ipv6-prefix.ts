/**
 * IPv6 prefixes for IPAM (DESIGN.md §8): the cloud's pool, the one /64 of each routed network, the
 * lowest free /64 of a pool, and the name servers advertised with it. Pure: no I/O.
 *
 * A /64 is handled as its upper 64 bits (a bigint): the pool is a range of them, and allocation is
 * arithmetic on that range.
 */
import { bigintToBytes, bytesToBigint, formatAddress, parseAddress } from './group.js';

/** SLAAC (RFC 4862 with EUI-64 interface ids) works only on a /64, so every network gets exactly one. */
export const SUBNET_LENGTH = 64;
/**
 * At most what glibc reads from resolv.conf (MAXNS): a VM offered more by RDNSS would ignore the
 * rest, so the extra ones could never be relied on.
 */
export const DNS_SERVERS_MAX = 3;

export interface Ipv6Prefix {
  /** The network address (host bits zero). */
  address: bigint;
  length: number;
  /** `<RFC 5952 address>/<length>`: the one spelling stored and printed. */
  text: string;
}

const LENGTH = /^(?:0|[1-9][0-9]{0,2})$/;
const ALL = (1n << 128n) - 1n;

export function formatIpv6(address: bigint): string {
  return formatAddress(bigintToBytes(address, 16));
}

export function prefixOf(address: bigint, length: number): Ipv6Prefix {
  return { address, length, text: `${formatIpv6(address)}/${length}` };
}

/**
 * Parses `address/length`. Host bits set (2001:db8::1/64), a zone id or a length with leading zeros
 * are refused rather than corrected: such a text is more likely a typo for another prefix than a
 * way to write this one.
 */
export function parseIpv6Prefix(text: string): Ipv6Prefix {
  const slash = text.indexOf('/');
  if (slash < 0) throw new RangeError(`${JSON.stringify(text)} is not an IPv6 prefix: write it as address/length, e.g. 2001:db8:100::/48`);
  const addressText = text.slice(0, slash);
  const lengthText = text.slice(slash + 1);
  const bytes = parseAddress(addressText, 'inet6');
  if (!bytes) {
    const v4 = parseAddress(addressText, 'inet') !== undefined;
    throw new RangeError(`${JSON.stringify(text)} is not an IPv6 prefix${v4 ? ' (IPAM is IPv6 only)' : ''}`);
  }
  if (!LENGTH.test(lengthText) || Number(lengthText) > 128) {
    throw new RangeError(`${JSON.stringify(text)}: the prefix length must be a whole number 0…128 without leading zeros`);
  }
  const length = Number(lengthText);
  const address = bytesToBigint(bytes);
  const network = address & networkMask(length);
  if (network !== address) {
    throw new RangeError(`${JSON.stringify(text)} has host bits set; the prefix is ${prefixOf(network, length).text}`);
  }
  return prefixOf(network, length);
}

function networkMask(length: number): bigint {
  return length === 0 ? 0n : ALL ^ ((1n << BigInt(128 - length)) - 1n);
}

/** Why `prefix` cannot hold tenants' addresses (multicast, link-local, loopback …), or undefined if it can. */
export function unroutablePrefixReason(prefix: Ipv6Prefix): string | undefined {
  const overlaps = (other: string) => {
    const { address, length } = parseIpv6Prefix(other);
    const shorter = Math.min(length, prefix.length);
    return (prefix.address & networkMask(shorter)) === (address & networkMask(shorter));
  };
  if (overlaps('ff00::/8')) return 'it overlaps the multicast range ff00::/8';
  if (overlaps('fe80::/10')) return 'it overlaps the link-local range fe80::/10';
  // ::/8 holds the unspecified and loopback addresses and the IPv4-mapped and -compatible ranges.
  if (overlaps('::/8')) return 'it overlaps ::/8 (unspecified, loopback, IPv4-mapped addresses)';
  return undefined;
}

/** The cloud-wide pool: IPv6, at most /64 long (so it holds at least one network), and routable. */
export function parsePool(text: string): Ipv6Prefix {
  const pool = parseIpv6Prefix(text);
  if (pool.length > SUBNET_LENGTH) {
    throw new RangeError(`pool ${pool.text} is longer than /${SUBNET_LENGTH}: it must hold at least one /${SUBNET_LENGTH} (e.g. 2001:db8:100::/48)`);
  }
  const reason = unroutablePrefixReason(pool);
  if (reason) throw new RangeError(`pool ${pool.text} cannot hold tenants' addresses: ${reason}`);
  return pool;
}

/** A network's prefix: exactly a /64, and routable. */
export function parseSubnet(text: string): Ipv6Prefix {
  const subnet = parseIpv6Prefix(text);
  if (subnet.length !== SUBNET_LENGTH) {
    throw new RangeError(`${subnet.text} is not a /${SUBNET_LENGTH}: a network's prefix is exactly one /${SUBNET_LENGTH} (SLAAC needs it)`);
  }
  const reason = unroutablePrefixReason(subnet);
  if (reason) throw new RangeError(`${subnet.text} cannot hold tenants' addresses: ${reason}`);
  return subnet;
}

/** The upper 64 bits of a /64: its number in the space of /64s. */
export function subnetNumber(subnet: Ipv6Prefix): bigint {
  return subnet.address >> 64n;
}

export function subnetFromNumber(number: bigint): Ipv6Prefix {
  return prefixOf(number << 64n, SUBNET_LENGTH);
}

/** True if `inner` lies wholly inside `outer`. */
export function prefixContains(outer: Ipv6Prefix, inner: Ipv6Prefix): boolean {
  return inner.length >= outer.length && (inner.address & networkMask(outer.length)) === outer.address;
}

/** The first and last /64 numbers of a pool. */
function poolRange(pool: Ipv6Prefix): { first: bigint; last: bigint } {
  const first = pool.address >> 64n;
  return { first, last: first + (1n << BigInt(SUBNET_LENGTH - pool.length)) - 1n };
}

/** How many /64s a pool holds. */
export function poolSize(pool: Ipv6Prefix): bigint {
  return 1n << BigInt(SUBNET_LENGTH - pool.length);
}

/**
 * The lowest /64 of `pool` whose number is not in `taken`, or undefined when every one is taken.
 * Numbers outside the pool are ignored. Linear in the number of taken /64s, whatever the pool's size.
 */
export function lowestFreeSubnet(pool: Ipv6Prefix, taken: Iterable<bigint>): Ipv6Prefix | undefined {
  const { first, last } = poolRange(pool);
  const inside = [...new Set(taken)].filter((number) => number >= first && number <= last).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  let candidate = first;
  for (const number of inside) {
    if (number !== candidate) break;
    candidate++;
  }
  return candidate > last ? undefined : subnetFromNumber(candidate);
}

/**
 * A name server for RDNSS: one plain IPv6 unicast address, in RFC 5952 form. Link-local ones are
 * refused: a zone id means nothing to a VM, and without one the address is ambiguous to every host
 * but the router.
 */
export function parseDnsServer(text: string): string {
  const bytes = text.includes('/') || text.includes('%') ? undefined : parseAddress(text, 'inet6');
  if (!bytes) throw new RangeError(`name server ${JSON.stringify(text)} is not a plain IPv6 address (no prefix length, no zone id)`);
  const address = bytesToBigint(bytes);
  const reason = unroutablePrefixReason(prefixOf(address, 128));
  if (reason) throw new RangeError(`name server ${formatIpv6(address)} is not a unicast address a VM can reach: ${reason}`);
  return formatIpv6(address);
}

/** The name servers of one network: each valid, none repeated, at most DNS_SERVERS_MAX. */
export function parseDnsServers(texts: readonly string[]): string[] {
  const servers = texts.map(parseDnsServer);
  const repeated = servers.find((server, index) => servers.indexOf(server) !== index);
  if (repeated) throw new RangeError(`name server ${repeated} is given twice`);
  if (servers.length > DNS_SERVERS_MAX) {
    throw new RangeError(`${servers.length} name servers given; at most ${DNS_SERVERS_MAX} (a VM's resolver reads no more)`);
  }
  return servers;
}
