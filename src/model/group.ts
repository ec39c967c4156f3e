/** Multicast group of a VNI: group base + VNI, and the groups that must never be used. */
import { Address4, Address6 } from 'ip-address';

export type GroupFamily = 'inet' | 'inet6';

export interface GroupBase {
  family: GroupFamily;
  value: bigint;
  text: string;
}

export interface MulticastGroup {
  family: GroupFamily;
  /** Network-order bytes, 4 or 16, as the kernel wants them. */
  bytes: Buffer;
  text: string;
}

const IPV4_MULTICAST = { first: 0xe0000000n, last: 0xefffffffn }; // 224.0.0.0/4

/** Parses `--group-base`; throws with a message an operator can act on. */
export function parseGroupBase(text: string): GroupBase {
  if (text.includes(':')) {
    let address: Address6;
    try {
      address = new Address6(text);
    } catch {
      throw new Error(`group base ${JSON.stringify(text)} is not an IPv6 address`);
    }
    if (address.subnetMask !== 128 || text.includes('%')) {
      throw new Error(`group base ${JSON.stringify(text)} must be a plain address such as ff05::`);
    }
    const value = address.bigInt();
    if (value >> 120n !== 0xffn) throw new Error(`group base ${text} is not an IPv6 multicast address (ff00::/8)`);
    if ((value & 0xffffffn) !== 0n) throw new Error(`group base ${text} must end in 24 zero bits so that base + VNI is unambiguous`);
    return { family: 'inet6', value, text: address.correctForm() };
  }
  let address: Address4;
  try {
    address = new Address4(text);
  } catch {
    throw new Error(`group base ${JSON.stringify(text)} is neither an IPv6 nor an IPv4 address`);
  }
  if (address.subnetMask !== 32) throw new Error(`group base ${JSON.stringify(text)} must be a plain address such as 239.0.0.0`);
  const value = address.bigInt();
  if (value < IPV4_MULTICAST.first || value > IPV4_MULTICAST.last) {
    throw new Error(`group base ${text} is not an IPv4 multicast address (224.0.0.0/4)`);
  }
  if ((value & 0xffffffn) !== 0n) throw new Error(`group base ${text} must end in 24 zero bits (e.g. 239.0.0.0)`);
  return { family: 'inet', value, text: address.correctForm() };
}

/** Encapsulation overhead of VXLAN over this family (outer IP + UDP + VXLAN + inner Ethernet). */
export function encapsulationOverhead(family: GroupFamily): number {
  return family === 'inet6' ? 70 : 50;
}

export function groupFor(base: GroupBase, vni: number): MulticastGroup {
  const value = base.value + BigInt(vni);
  const bytes = bigintToBytes(value, base.family === 'inet6' ? 16 : 4);
  return {
    family: base.family,
    bytes,
    // Only error messages read it; formatting every network's group up front cost more than its MAC.
    get text() {
      return formatAddress(bytes);
    },
  };
}

/**
 * The unspecified address as a vxlan's group: the kernel then has no default destination (it
 * floods only to all-zeros forwarding entries) and still opens its sockets for this family —
 * without a group or local address a vxlan would listen on IPv4 only.
 */
export function noGroup(family: GroupFamily): MulticastGroup {
  return { family, bytes: Buffer.alloc(family === 'inet6' ? 16 : 4), text: family === 'inet6' ? '::' : '0.0.0.0' };
}

// Group IDs (the low 112 bits of ff0X::) that IANA assigns, whole blocks taken
// conservatively: site-local (ff05::2 all-routers, ff05::1:3 DHCP servers …)
// and the variable-scope registry (ff0X::101 NTP, ff0X::fb mDNS, SAP …).
const RESERVED_IPV6_GROUP_IDS: ReadonlyArray<readonly [bigint, bigint, string]> = [
  [0x0n, 0x0n, 'reserved'],
  [0x2n, 0x2n, 'all-routers'],
  [0xcn, 0xcn, 'SSDP'],
  [0xfbn, 0xfbn, 'mDNSv6'],
  [0x100n, 0x1ffn, 'IANA variable-scope services (VMTP, NTP, SLP, PTP …)'],
  [0x201n, 0x204n, 'IANA variable-scope services (rwho, SUN RPC, J.Stds)'],
  [0x300n, 0x300n, 'Mbus/IPv6'],
  [0xbac0n, 0xbac0n, 'BACnet'],
  [0x1_0003n, 0x1_0004n, 'all-DHCP-servers/relays'],
  [0x1_1000n, 0x1_13ffn, 'service location (SLPv2)'],
  [0x2_0000n, 0x2_ffffn, 'multimedia conference calls / SAP'],
];

const RESERVED_IPV4_GROUPS: ReadonlyArray<readonly [bigint, bigint, string]> = [
  [0xe0000000n, 0xe00001ffn, 'local network / internetwork control block (224.0.0.0/23)'],
  [0xeffffffan, 0xeffffffan, 'SSDP (239.255.255.250)'],
  [0xeffffffdn, 0xeffffffdn, 'SLP (239.255.255.253)'],
];

/**
 * Why a group must not be used, or undefined if it may. Permanent (T=0)
 * IPv6 groups are checked against IANA's assignments whatever their scope.
 */
export function reservedGroupReason(group: MulticastGroup): string | undefined {
  const value = bytesToBigint(group.bytes);
  if (group.family === 'inet') {
    if (value < IPV4_MULTICAST.first || value > IPV4_MULTICAST.last) return 'not an IPv4 multicast address';
    return RESERVED_IPV4_GROUPS.find(([first, last]) => value >= first && value <= last)?.[2];
  }
  const flags = (value >> 116n) & 0xfn;
  if (flags !== 0n) return undefined;
  const groupId = value & ((1n << 112n) - 1n);
  return RESERVED_IPV6_GROUP_IDS.find(([first, last]) => groupId >= first && groupId <= last)?.[2];
}

/** Network-order bytes of a plain address of `family` (no prefix length, no zone), or undefined. */
export function parseAddress(text: string, family: GroupFamily): Buffer | undefined {
  if (text.includes('/') || text.includes('%')) return undefined;
  if (family === 'inet6') return Address6.isValid(text) ? bigintToBytes(new Address6(text).bigInt(), 16) : undefined;
  return Address4.isValid(text) ? bigintToBytes(new Address4(text).bigInt(), 4) : undefined;
}

export function bigintToBytes(value: bigint, length: number): Buffer {
  const bytes = Buffer.alloc(length);
  let rest = value;
  for (let i = length - 1; i >= 0; i--) {
    bytes[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  return bytes;
}

export function bytesToBigint(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

/** RFC 5952 text of an IPv6 address (the longest run of two or more zero groups as ::), or dotted IPv4. */
export function formatAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join('.');
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i]! << 8) | bytes[i + 1]!);
  let runStart = -1;
  let runLength = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && groups[end] === 0) end++;
    if (end - i > runLength) [runStart, runLength] = [i, end - i];
    i = end;
  }
  const hex = groups.map((group) => group.toString(16));
  if (runStart < 0) return hex.join(':');
  return `${hex.slice(0, runStart).join(':')}::${hex.slice(runStart + runLength).join(':')}`;
}
