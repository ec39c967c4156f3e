/**
 * Issue 17, bounded inputs: 40 networks whose `type` is a 60 KB string are errors with short
 * reasons, and the statuses of every network keep flowing (before, the status transaction grew past
 * etcd's request limit and no status of the host was written again); a VM on a healthy network
 * keeps pinging. An over-long or tiny --resync-interval is refused, naming the flag.
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type VmHandle } from './harness/datacentre.js';
import { readStatus } from './harness/observe.js';

const AGENT = fileURLToPath(new URL('../dist/cli/vxnetd.js', import.meta.url));
const BAD = Array.from({ length: 40 }, (_, i) => (0x701 + i).toString(16));

describe('bounded inputs', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let vma: VmHandle;
  let vmb: VmHandle;

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    etcd = await dc.etcd();
    await etcd.put('/v1/networks/7ff').value('{}');
    for (const hex of BAD) await etcd.put(`/v1/networks/${hex}`).value(JSON.stringify({ type: 'x'.repeat(60_000) }));
    const agents = [await dc.startAgent('h1'), await dc.startAgent('h2')];
    await Promise.all(agents.map((agent) => agent.waitReady()));
    vma = await dc.addVm('h1', 'br7ff', 'vma', '2001:db8:7ff::1');
    vmb = await dc.addVm('h2', 'br7ff', 'vmb', '2001:db8:7ff::2');
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('forty 60 KB type strings: short error reasons, every status written, the healthy network works', async () => {
    for (const host of ['h1', 'h2']) {
      await waitFor(async () => (await readStatus(etcd, host, '7ff'))?.state === 'ready' || undefined, `status of 7ff on ${host}`, 10_000);
      for (const hex of BAD) {
        const status = await waitFor(async () => readStatus(etcd, host, hex), `status of ${hex} on ${host}`, 10_000);
        expect(status.state).toBe('error');
        expect(status.reason).toMatch(/^type "x{39}… \(60002 characters, cut\) is not supported \(only "vxlan"\)$/);
      }
    }
    expect(await dc.ping(vma, vmb.address, { count: 3, timeoutS: 3 })).toBe(true);
    // Statuses still flow after all that: a new network's status arrives.
    await etcd.put('/v1/networks/7fe').value('{}');
    await waitFor(async () => (await readStatus(etcd, 'h1', '7fe'))?.state === 'ready' || undefined, 'status of 7fe on h1', 10_000);
  });

  it.each(['1000h', '1ms', '25h'])('--resync-interval %s is refused, naming the flag', (interval) => {
    const result = spawnSync(process.execPath, [AGENT, '--underlay', 'u0', '--resync-interval', interval], { encoding: 'utf8', timeout: 20_000 });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain(`--resync-interval must be between 1s and 24h, got "${interval}"`);
  });
});
