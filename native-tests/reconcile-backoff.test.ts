/**
 * Issue 15: a network that cannot be realised is retried with capped, jittered backoff (1 s …
 * 60 s). Twelve networks whose VNIs foreign vxlan devices already hold (the kernel refuses a
 * second vxlan with the same VNI and port) cost a trickle of requests and little CPU, not a loop
 * of bulk applies and resyncs (~175 requests/s before); once the foreign devices are gone every
 * network converges with no etcd write and no periodic resync (1 h here).
 */
import { readFileSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle } from './harness/datacentre.js';
import { pairConverged, managedLinks, readStatus, scrape, sumSamples } from './harness/observe.js';
import { sleep } from './harness/wait.js';

const NETWORKS = Array.from({ length: 12 }, (_, i) => 0x601 + i);
const hexOf = (vni: number) => vni.toString(16);
const WINDOW_MS = 10_000;

/** CPU seconds (user + system) the process has used so far. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

describe('retries with backoff', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let agent: AgentHandle;

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1'] });
    etcd = await dc.etcd();
    const ns = dc.host('h1').ns;
    for (const vni of NETWORKS) {
      const result = await dc.exec(ns, ['ip', 'link', 'add', 'name', `fx${hexOf(vni)}`, 'type', 'vxlan', 'id', String(vni), 'dstport', '4789', 'group', `ff05::${hexOf(vni)}`, 'dev', 'u0', 'ttl', '5']);
      expect(result.code, `foreign vxlan ${vni}: ${result.stderr}`).toBe(0);
    }
    for (const vni of NETWORKS) await etcd.put(`/v1/networks/${hexOf(vni)}`).value('{}');
    agent = await dc.startAgent('h1', ['--resync-interval', '1h']);
    await agent.waitReady();
  });

  afterAll(async () => {
    if (agent) console.log(`[reconcile-backoff] agent log tail:\n${agent.logs().slice(-40).map((l) => JSON.stringify(l)).join('\n')}`);
    await dc?.destroy();
  });

  it('twelve refused networks cost a trickle of requests and CPU, and converge after the cause goes, without any etcd event', async () => {
    for (const vni of NETWORKS) {
      await waitFor(async () => (await readStatus(etcd, 'h1', hexOf(vni)))?.state === 'error' || undefined, `error status of ${hexOf(vni)}`, 10_000);
    }
    const status = await readStatus(etcd, 'h1', hexOf(NETWORKS[0]!));
    expect(status.reason).toMatch(/device fx601 already uses VNI 1537 \(601\)/);
    // Past the first, fast retries (1, 2, 4, 8 s), into the slower ones.
    await sleep(8_000);
    const requestsBefore = sumSamples(await scrape(agent, 30_000), 'vxnetd_netlink_requests_total');
    const cpuBefore = cpuSeconds(agent.pid);
    await sleep(WINDOW_MS);
    const samples = await scrape(agent, 30_000);
    const requestsPerSecond = (sumSamples(samples, 'vxnetd_netlink_requests_total') - requestsBefore) / (WINDOW_MS / 1000);
    const cpuShare = (cpuSeconds(agent.pid) - cpuBefore) / (WINDOW_MS / 1000);
    console.log(`[reconcile-backoff] over ${WINDOW_MS / 1000} s: ${requestsPerSecond.toFixed(1)} netlink requests/s, agent CPU ${(cpuShare * 100).toFixed(1)} % of one core`);
    // Retries plan from what the agent knows of the kernel: the holder is seen, nothing is sent. Looping was ~175/s.
    expect(requestsPerSecond).toBeLessThan(1);
    expect(cpuShare).toBeLessThan(0.05);
    for (const vni of NETWORKS) expect(dc.host('h1') && (await dc.link(dc.host('h1').ns, `br${hexOf(vni)}`))).toBeUndefined();

    const watchRevision = sumSamples(samples, 'vxnetd_etcd_watch_revision');
    const ns = dc.host('h1').ns;
    for (const vni of NETWORKS) await dc.exec(ns, ['ip', 'link', 'del', `fx${hexOf(vni)}`]);
    // The deletions' link events let each network go ahead; the backoff cap (60 s, +20 % jitter) bounds it anyway.
    await waitFor(
      async () => {
        const links = await managedLinks(dc, ns);
        return NETWORKS.every((vni) => pairConverged(links, hexOf(vni), 1430)) || undefined;
      },
      'every network converged after the foreign devices were deleted',
      75_000,
      250,
    );
    for (const vni of NETWORKS) expect(await readStatus(etcd, 'h1', hexOf(vni))).toMatchObject({ state: 'ready' });
    expect(sumSamples(await scrape(agent, 30_000), 'vxnetd_etcd_watch_revision')).toBe(watchRevision);
  }, 150_000);
});
