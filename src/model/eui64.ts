/**
 * The address a VM takes on a routed network by SLAAC (RFC 4862) with a modified EUI-64 interface
 * id (RFC 4291 appendix A), which is what the cloud assumes every VM does (DESIGN.md §8). Pure.
 */
import { SUBNET_LENGTH, formatIpv6, type Ipv6Prefix } from './ipv6-prefix.js';

const MAC = /^[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(?:\1[0-9a-fA-F]{2}){4}$/;

/**
 * A VM's MAC as written by libvirt, ip or Windows (`52:54:00:d6:c2:a9`, `52-54-00-D6-C2-A9`).
 * Group (multicast) and all-zero MACs are refused: no NIC has one, so such a value is a mistake
 * whose "address" would mislead.
 */
export function parseMac(text: string): Buffer {
  if (!MAC.test(text)) {
    throw new RangeError(`${JSON.stringify(text)} is not a MAC address: write six hex bytes separated by colons, e.g. 52:54:00:d6:c2:a9`);
  }
  const mac = Buffer.from(text.split(/[:-]/).map((byte) => Number.parseInt(byte, 16)));
  if (mac[0]! & 0x01) throw new RangeError(`${text} is a multicast (group) MAC address; a VM's NIC has a unicast one`);
  if (mac.every((byte) => byte === 0)) throw new RangeError(`${text} is the all-zero MAC address; a VM's NIC never has it`);
  return mac;
}

/** The modified EUI-64 interface id of a MAC: ff:fe in the middle, the universal/local bit flipped. */
export function eui64InterfaceId(mac: Uint8Array): bigint {
  if (mac.length !== 6) throw new RangeError(`a MAC has 6 bytes, got ${mac.length}`);
  const bytes = [mac[0]! ^ 0x02, mac[1]!, mac[2]!, 0xff, 0xfe, mac[3]!, mac[4]!, mac[5]!];
  return bytes.reduce((id, byte) => (id << 8n) | BigInt(byte), 0n);
}

/** The SLAAC address of the NIC with `mac` on a network whose prefix is `subnet` (a /64), in RFC 5952 form. */
export function slaacAddress(subnet: Ipv6Prefix, mac: Uint8Array): string {
  if (subnet.length !== SUBNET_LENGTH) throw new RangeError(`SLAAC with EUI-64 needs a /${SUBNET_LENGTH}, got ${subnet.text}`);
  return formatIpv6(subnet.address | eui64InterfaceId(mac));
}
