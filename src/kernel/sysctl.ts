/**
 * The few per-device IPv6 settings rtnetlink cannot change (the kernel takes only the address
 * generation mode and the token over netlink): written to /proc/sys, never by spawning sysctl.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';

export interface Ipv6DeviceSettings {
  /** Ignore router advertisements: a tenant's (or a router's) RA must never give the host an address or a route on that device. */
  ignoreRouterAdvertisements(device: string): void;
}

/** Writes `value` unless the file holds it already; throws what the file system says (EROFS under a hardened unit, ENOENT …). */
function ensure(path: string, value: string): void {
  if (readFileSync(path, 'utf8').trim() === value) return;
  writeFileSync(path, value);
}

/** Thrown when the device has no IPv6 at all (MTU below 1280): there is nothing to ignore. */
export class NoIpv6OnDevice extends Error {}

export const procIpv6Settings: Ipv6DeviceSettings = {
  ignoreRouterAdvertisements(device) {
    // Where /proc/sys is hidden (a unit's ProcSubset=pid) every path is missing: that is not "no IPv6 here".
    if (existsSync('/proc/sys/net/ipv6/conf/all') && !existsSync(`/proc/sys/net/ipv6/conf/${device}`)) throw new NoIpv6OnDevice(device);
    ensure(`/proc/sys/net/ipv6/conf/${device}/accept_ra`, '0');
    ensure(`/proc/sys/net/ipv6/conf/${device}/autoconf`, '0');
  },
};
