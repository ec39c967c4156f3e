/**
 * The rtnetlink adapter against the real kernel (src/kernel/rtnl.ts): the
 * ifindex from a create's echo, errno of refusals, many requests in flight
 * each matched to its own answer, dumps on the request thread, and one
 * subscribed link-event socket after overflows. Runs probes in a fresh host
 * namespace.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre } from './harness/datacentre.js';

const PROBE = fileURLToPath(new URL('./probes/kernel-requests.ts', import.meta.url));
const EXIT_WHILE_BUSY = fileURLToPath(new URL('./probes/exit-while-busy.ts', import.meta.url));
const EVENT_OVERFLOW = fileURLToPath(new URL('./probes/event-overflow.ts', import.meta.url));

describe('rtnetlink requests (NetlinkKernel)', () => {
  let dc: DataCentre;
  let seen: Record<string, any>;

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1'] });
    const result = await dc.exec(dc.host('h1').ns, [process.execPath, '--import', 'tsx', PROBE], { timeoutMs: 30_000 });
    if (result.code !== 0) throw new Error(`probe failed (${result.code}): ${result.stderr.slice(-2000)}`);
    seen = JSON.parse(result.stdout.trim().split('\n').at(-1)!);
  });
  afterAll(() => dc?.destroy());

  it("returns a new master-less device's ifindex from the kernel's echo", () => {
    expect(seen.echoed).toBeGreaterThan(0);
    expect(seen.echoed).toBe(seen.kt0Index);
  });

  it("rejects refusals with the kernel's errno and the operation", () => {
    expect(seen.duplicate).toMatchObject({ errno: 'EEXIST', message: expect.stringContaining('create bridge kt0 again: EEXIST') });
    expect(seen.missing).toBeNull();
    expect(seen.changeMissing).toMatchObject({ errno: 'ENODEV', message: expect.stringContaining('set mtu of kt-missing') });
  });

  it('creates an enslaved device without asking for its echo', () => {
    expect(seen.withMaster).toBeNull();
    expect(seen.kt1Master).toBe(seen.kt0Index);
  });

  it('matches 100 concurrent creates, changes and deletes to their own answers', () => {
    expect(seen.concurrentMatch).toBe(true);
    expect(seen.mtusSet).toBe(true);
    expect(seen.left).toBe(0);
  });

  it("adds an address and appends two all-zeros forwarding entries with the address and neighbour codecs, and dumps them back", () => {
    expect(seen.addressDumped).toEqual({ prefixLength: 64, nodad: true });
    // The vxlan's multicast group shows as an all-zeros entry too.
    expect(seen.floodTo).toEqual(['fd000000000000000000000000000b01', 'fd000000000000000000000000000b02', 'ff050000000000000000000000001001']);
  });

  it('refuses requests after close', () => {
    expect(seen.afterClose).toMatchObject({ errno: 'ESHUTDOWN' });
  });

  it('reports a request worker thread that dies and sends the next request on a fresh one', () => {
    expect(seen.socketErrors).toEqual([expect.stringMatching(/^netlink worker thread exited \(code \d+\)$/)]);
    expect(seen.workersStarted).toBe(2);
    expect(seen.afterWorkerDied).toEqual({ ok: 1 }); // the link, then the acknowledgement
  });

  it("fails a request with sendmsg()'s errno when the kernel refuses to take it, and goes on", () => {
    expect(seen.oversized).toMatchObject({ errno: 'EMSGSIZE', message: expect.stringContaining('get link (oversized)') });
    expect(seen.afterOversized).toEqual({ ok: 1 });
    expect(seen.workersStarted).toBe(2);
  });

  it('exits cleanly when the process ends with requests in flight on the worker (12 tries)', async () => {
    const codes: Array<number | null> = [];
    for (let i = 0; i < 12; i++) {
      const result = await dc.exec(dc.host('h1').ns, [process.execPath, '--import', 'tsx', EXIT_WHILE_BUSY], { timeoutMs: 30_000 });
      codes.push(result.code);
    }
    expect(codes).toEqual(Array(12).fill(0));
  }, 120_000);

  it('keeps exactly one socket subscribed to link events after 5 overflows, and still hears changes', async () => {
    const result = await dc.exec(dc.host('h1').ns, [process.execPath, '--import', 'tsx', EVENT_OVERFLOW, '5'], { timeoutMs: 60_000 });
    if (result.code !== 0) throw new Error(`probe failed (${result.code}): ${result.stderr.slice(-2000)}`);
    expect(JSON.parse(result.stdout.trim().split('\n').at(-1)!)).toEqual({ overflows: 5, subscribed: 1, heardAfter: true });
  }, 90_000);
});
