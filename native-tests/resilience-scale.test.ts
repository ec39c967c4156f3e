/**
 * Issue 4, restarts and bursts (DESIGN.md §2 "Idempotent and
 * non-disruptive", §7 restart target): a restart over a converged host makes
 * no kernel change at all, whether the agent was killed or stopped; 1,000
 * networks arriving or leaving at once converge without killing the agent.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle } from './harness/datacentre.js';
import { LinkMonitor, httpStatus, ifindexes, managedEvents, managedLinks, mutatingRequests, pairConverged, putInTxns, scrape, sumSamples } from './harness/observe.js';
import { sleep } from './harness/wait.js';

const MTU = 1430;
const AGENT_ARGS = ['--resync-interval', '1h'];
/** VNIs away from the reserved groups of ff05:: (0x100-0x1ff, 0x1_0003, 0x1_1000-0x1_13ff, 0x2_xxxx). */
const SMALL = Array.from({ length: 50 }, (_, i) => (0x40000 + i).toString(16));
const BURST = Array.from({ length: 1000 }, (_, i) => (0x30000 + i).toString(16));

describe('restart and bursts', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let agent: AgentHandle;
  let agentExited = false;
  const measured: Record<string, number | string> = {};
  const ns = () => dc.host('h1').ns;

  const start = async () => {
    const started = performance.now();
    agent = await dc.startAgent('h1', AGENT_ARGS);
    agentExited = false;
    const handle = agent;
    void handle.exited.then(() => {
      if (agent === handle) agentExited = true;
    });
    // Fine-grained poll (waitReady polls every 100 ms): this is a measurement.
    const outcome = await waitFor(async () => (agentExited ? 'died' : (await httpStatus(handle, '/readyz', 500)) === 200 && 'ready'), 'agent ready', 30_000, 10);
    if (outcome === 'died') throw new Error(`agent died before becoming ready: ${await death()}`);
    return Math.round(performance.now() - started);
  };
  const statuses = async () => {
    const kvs = await etcd.getAll().prefix('/v1/hosts/h1/status/').exec();
    return new Map(kvs.kvs.map((kv) => [kv.key.toString().slice('/v1/hosts/h1/status/'.length), { value: JSON.parse(kv.value.toString()), mod: kv.mod_revision }]));
  };
  const allConverged = async (hexes: string[]) => {
    const links = await managedLinks(dc, ns());
    return hexes.every((hex) => pairConverged(links, hex, MTU)) ? links : undefined;
  };
  const death = async () => {
    const status = await agent.exited;
    const tail = agent.logs().slice(-4).map((l) => (l.raw !== undefined ? `[${l.stream}] ${l.raw}` : JSON.stringify(l).slice(0, 300)));
    return `agent ${agent.pid} died (${JSON.stringify(status)}); last lines:\n${tail.join('\n')}`;
  };
  /** Waits for `hexes` to converge; stops early (and says why) if the agent dies meanwhile. */
  const converge = async (hexes: string[], what: string, timeoutMs: number) => {
    const outcome = await waitFor(async () => (agentExited ? 'died' : (await allConverged(hexes)) && 'converged'), what, timeoutMs, 250);
    if (outcome === 'died') expect.fail(`${what}: ${await death()}`);
  };
  /**
   * Precondition of the tests that follow the burst: every network converged
   * under a running agent. If an earlier test left the agent dead, start it
   * again (as systemd's Restart= would), at most three times.
   */
  const ensureConverged = async (hexes: string[]) => {
    for (let attempt = 1; attempt <= 3; attempt++) {
      if (agentExited) {
        try {
          await start();
        } catch {
          continue;
        }
      }
      const outcome = await waitFor(async () => (agentExited ? 'died' : (await allConverged(hexes)) && 'converged'), 'precondition: converged', 90_000, 250);
      if (outcome === 'converged') return;
    }
    expect.fail(`precondition: the agent keeps dying while converging ${hexes.length} networks: ${await death()}`);
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1'] });
    etcd = await dc.etcd();
    await putInTxns(etcd, SMALL.map((hex) => [`/v1/networks/${hex}`, '{}']));
    await start();
    await waitFor(() => allConverged(SMALL), '50 networks converged', 20_000, 100);
    await waitFor(async () => [...(await statuses()).values()].filter((s) => s.value.state === 'ready').length === SMALL.length, '50 statuses ready', 10_000, 100);
    // The counter being asserted as 0 below does count: this agent created 50 × 2 devices.
    expect(mutatingRequests(await scrape(agent)).create).toBe(SMALL.length * 2);
  }, 60_000);

  afterAll(async () => {
    console.log(`[resilience-scale] measured: ${JSON.stringify(measured)}`);
    await dc?.destroy();
  });

  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    it(`restart after ${signal} over 50 converged networks: no link event for managed devices, same ifindexes, zero mutating requests`, async () => {
      const before = await ifindexes(dc, ns());
      expect(before.size).toBe(SMALL.length * 2);
      const statusBefore = await statuses();
      const monitor = await LinkMonitor.start(dc, ns(), 60);
      const exit = await agent.stop(signal);
      if (signal === 'SIGKILL') expect(exit.signal).toBe('SIGKILL');
      else expect(exit.code).toBe(0);
      measured[`50 networks, ready after ${signal} restart (ms)`] = await start();
      // Leave time for any late reaction (events of its own changes, status writes …).
      await sleep(1_000);
      const events = await monitor.stop();
      expect(managedEvents(events), `link events for managed devices during the restart:\n${events.join('\n')}`).toEqual([]);
      expect(await ifindexes(dc, ns())).toEqual(before);
      expect(mutatingRequests(await scrape(agent))).toEqual({ create: 0, change: 0, delete: 0 });
      const statusAfter = await statuses();
      measured[`50 networks, statuses rewritten by the ${signal} restart`] = [...statusAfter].filter(([hex, s]) => statusBefore.get(hex)?.mod !== s.mod).length;
      expect([...statusAfter.values()].every((s) => s.value.state === 'ready')).toBe(true);
    });
  }

  it('1,000 networks written at once while the agent runs: 2,000 devices up, all statuses ready, same process', async () => {
    const pid = agent.pid;
    const startedAt = Date.now();
    // Eight transactions of 125 puts, all in flight together (etcd allows 128 ops per txn).
    await putInTxns(etcd, BURST.map((hex) => [`/v1/networks/${hex}`, '{}']));
    const all = [...SMALL, ...BURST];
    await converge(all, '1,050 networks converged after the burst', 90_000);
    measured['burst of 1,000: all devices converged (ms)'] = Date.now() - startedAt;
    expect((await managedLinks(dc, ns())).size).toBe(all.length * 2);
    await waitFor(async () => [...(await statuses()).values()].filter((s) => s.value.state === 'ready').length === all.length, '1,050 statuses ready', 30_000, 250);
    measured['burst of 1,000: all statuses ready (ms)'] = Date.now() - startedAt;
    if (agentExited) expect.fail(await death());
    expect(agent.pid).toBe(pid);
    expect(await httpStatus(agent, '/healthz')).toBe(200);
    const samples = await scrape(agent, 10_000);
    expect(sumSamples(samples, 'vxnetd_networks_ready')).toBe(all.length);
    expect(sumSamples(samples, 'vxnetd_networks_error')).toBe(0);
    measured['burst of 1,000: "link events were lost" resyncs'] = agent.logs().filter((l) => /link events were lost/.test(l.msg)).length;
  }, 150_000);

  for (const signal of ['SIGKILL', 'SIGTERM'] as const) {
    it(`restart after ${signal} over 1,050 converged networks: ready quickly, zero mutating requests, same ifindexes`, async () => {
      await ensureConverged([...SMALL, ...BURST]);
      const before = await ifindexes(dc, ns());
      expect(before.size).toBe((SMALL.length + BURST.length) * 2);
      await agent.stop(signal);
      const ms = await start();
      measured[`1,050 networks, ready after ${signal} restart (ms)`] = ms;
      await sleep(500);
      expect(mutatingRequests(await scrape(agent, 10_000))).toEqual({ create: 0, change: 0, delete: 0 });
      expect(await ifindexes(dc, ns())).toEqual(before);
      // DESIGN.md §7: ready in under 2 s (measured here from the spawn, Node start-up included).
      expect(ms).toBeLessThan(2_000);
    }, 60_000);
  }

  it('every network deleted at once: converges to no managed device and no status, same process', async () => {
    await ensureConverged([...SMALL, ...BURST]);
    const pid = agent.pid;
    const startedAt = Date.now();
    // One delete request: one revision carrying 1,050 delete events. The
    // kernel needs ~30 ms per device unregister (ip -batch: 400 deletions in
    // 11.9 s here), so 2,100 deletions take about a minute whoever asks.
    const { deleted } = await etcd.delete().prefix('/v1/networks/').exec();
    expect(Number(deleted)).toBe(SMALL.length + BURST.length);
    const outcome = await waitFor(async () => (agentExited ? 'died' : (await managedLinks(dc, ns())).size === 0 && 'gone'), 'no managed device left', 170_000, 500);
    if (outcome === 'died') expect.fail(`while deleting every network: ${await death()}`);
    measured['delete all: devices gone (ms)'] = Date.now() - startedAt;
    await waitFor(async () => (await statuses()).size === 0, 'no status left', 30_000, 250);
    expect(agentExited).toBe(false);
    expect(agent.pid).toBe(pid);
    const samples = await scrape(agent);
    expect(sumSamples(samples, 'vxnetd_networks_desired')).toBe(0);
    expect(sumSamples(samples, 'vxnetd_networks_ready')).toBe(0);
    expect(await httpStatus(agent, '/readyz')).toBe(200);
  }, 240_000);

  it('start-up over 1,000 networks on an empty host (its own creations are a burst of link events): converges, same process', async () => {
    if (!agentExited) await agent.stop('SIGTERM');
    expect((await managedLinks(dc, ns())).size).toBe(0);
    await putInTxns(etcd, BURST.map((hex) => [`/v1/networks/${hex}`, '{}']));
    const startedAt = Date.now();
    await start();
    const pid = agent.pid;
    await converge(BURST, '1,000 networks converged from an empty host', 90_000);
    measured['start-up from empty: 1,000 networks converged (ms)'] = Date.now() - startedAt;
    await waitFor(async () => [...(await statuses()).values()].filter((s) => s.value.state === 'ready').length === BURST.length, '1,000 statuses ready', 30_000, 250);
    if (agentExited) expect.fail(await death());
    expect(agent.pid).toBe(pid);
  }, 150_000);
});
