import { createHash } from 'node:crypto';

export type DeviceKind = 'vxlan' | 'bridge';

/**
 * A locally administered unicast MAC derived from host, kind and VNI, so a
 * re-created device keeps its MAC (and udev's persistent policy has nothing
 * random to replace).
 */
export function deterministicMac(hostname: string, kind: DeviceKind, vni: number): Buffer {
  const digest = createHash('sha256').update(`vxnetd\0${hostname}\0${kind}\0${vni}`).digest();
  const mac = Buffer.from(digest.subarray(0, 6));
  mac[0] = (mac[0]! & 0xfc) | 0x02;
  return mac;
}

export function formatMac(mac: Uint8Array): string {
  return Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join(':');
}
