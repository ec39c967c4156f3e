import type { NetworkInterfaceInfo } from 'node:os';
import { describe, expect, it } from 'vitest';
import { cachedUnderlayAddress } from '../src/agent/underlay-address.js';

const v6 = (address: string): NetworkInterfaceInfo =>
  ({ address, family: 'IPv6', internal: false, netmask: 'ffff:ffff:ffff:ffff::', mac: '00:00:00:00:00:00', cidr: null, scopeid: 0 }) as NetworkInterfaceInfo;

describe('cachedUnderlayAddress', () => {
  it('prefers a global IPv6 address, caches it for maxAgeMs, and looks a missing one up every time', () => {
    let clock = 0;
    let interfaces: NodeJS.Dict<NetworkInterfaceInfo[]> = {};
    let lookups = 0;
    const address = cachedUnderlayAddress('u0', { maxAgeMs: 1000, now: () => clock, lookup: () => (lookups++, interfaces) });

    expect(address.get()).toBeUndefined();
    expect(address.get()).toBeUndefined();
    expect(lookups).toBe(2);

    interfaces = { u0: [v6('fe80::1'), v6('2001:db8::7')] };
    expect(address.get()).toBe('2001:db8::7');
    interfaces = { u0: [v6('2001:db8::8')] };
    clock = 999;
    expect(address.get()).toBe('2001:db8::7');
    expect(lookups).toBe(3);
    clock = 3000;
    expect(address.get()).toBe('2001:db8::8');
  });
});
