/** The underlay's address for the liveness key, without blocking the event loop on every refresh. */
import { networkInterfaces, type NetworkInterfaceInfo } from 'node:os';

export interface UnderlayAddressOptions {
  maxAgeMs?: number;
  /** Only an address of this family (default: IPv6 if it has one, else IPv4). */
  family?: 'inet' | 'inet6';
  lookup?: () => NodeJS.Dict<NetworkInterfaceInfo[]>;
  now?: () => number;
}

/**
 * Looked up at most every maxAgeMs (default five minutes): os.networkInterfaces()
 * walks every interface, which blocks the event loop noticeably at thousands of
 * devices, right when readiness changes. A missing address is looked up again each time:
 * the underlay may just have appeared.
 */
export function cachedUnderlayAddress(name: string, opts: UnderlayAddressOptions = {}): { get(): string | undefined } {
  const { maxAgeMs = 5 * 60_000, lookup = networkInterfaces, now = Date.now, family } = opts;
  let value: string | undefined;
  let lookedUpAt = -Infinity;
  return {
    get() {
      if (value !== undefined && now() - lookedUpAt < maxAgeMs) return value;
      const addresses = lookup()[name] ?? [];
      const ipv6 = family === 'inet' ? undefined : addresses.find((a) => a.family === 'IPv6' && !a.internal && !a.address.startsWith('fe80'));
      const pick = ipv6 ?? (family === 'inet6' ? undefined : addresses.find((a) => a.family === 'IPv4'));
      value = pick?.address;
      lookedUpAt = now();
      return value;
    },
  };
}
