/** When a network's IPAM is available: every live router reports the current entry (src/model/ipam-availability.ts). */
import { describe, expect, it } from 'vitest';
import { ipamAvailability, NO_LIVE_ROUTER, type RouterReport } from '../src/model/ipam-availability.js';

const entry = { prefix: '2001:db8:100:1::/64', revision: 42 };
const serving = (host: string): RouterReport => ({ host, ipam: { revision: 42, prefix: entry.prefix } });

describe('ipamAvailability', () => {
  it('is available when every live router reports the current revision and prefix', () => {
    expect(ipamAvailability(entry, [serving('r2'), serving('r1')])).toEqual({
      available: true,
      routers: [
        { host: 'r1', serving: true },
        { host: 'r2', serving: true },
      ],
      waitingFor: [],
    });
  });

  it('names the routers it waits for, and why', () => {
    const result = ipamAvailability(entry, [
      serving('r1'),
      { host: 'r2' },
      { host: 'r3', ipam: { revision: 40, prefix: '2001:db8:100:9::/64' } },
      { host: 'r4', ipam: { revision: 42, reason: 'radvd exited with status 1' } },
      { host: 'r5', ipam: { revision: 42, prefix: '2001:db8:100:2::/64' } },
      { host: 'r6', ipam: { revision: 43, prefix: entry.prefix } },
    ]);
    expect(result.available).toBe(false);
    expect(result.waitingFor).toEqual(['r2', 'r3', 'r4', 'r5', 'r6']);
    expect(result.routers).toEqual([
      { host: 'r1', serving: true },
      { host: 'r2', serving: false, reason: 'has not reported on this IPAM entry yet' },
      { host: 'r3', serving: false, reason: 'still on IPAM revision 40 (current: 42)' },
      { host: 'r4', serving: false, reason: 'cannot serve it: radvd exited with status 1' },
      { host: 'r5', serving: false, reason: 'reports prefix 2001:db8:100:2::/64, not 2001:db8:100:1::/64' },
      { host: 'r6', serving: false, reason: 'reports IPAM revision 43, newer than the 42 read: read again' },
    ]);
  });

  it('a reason wins over a prefix at the current revision', () => {
    const result = ipamAvailability(entry, [{ host: 'r1', ipam: { revision: 42, prefix: entry.prefix, reason: 'DAD failed for 2001:db8:100:1::1' } }]);
    expect(result).toMatchObject({ available: false, waitingFor: ['r1'] });
  });

  it('is not available with no live router: nothing advertises the prefix', () => {
    expect(ipamAvailability(entry, [])).toEqual({ available: false, routers: [], waitingFor: [], reason: NO_LIVE_ROUTER });
  });
});
