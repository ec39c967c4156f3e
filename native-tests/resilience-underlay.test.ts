/**
 * Issue 4, underlay trouble (DESIGN.md §2, §3): an underlay that is missing
 * at start, renamed away or removed never makes the agent delete a bridge or
 * die; statuses say what is wrong; when the underlay is back, networks
 * converge. (The kernel itself deletes a vxlan whose lower device leaves the
 * namespace: that is observed and reported, not blamed on the agent.)
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle } from './harness/datacentre.js';
import { httpStatus, ifindexes, managedLinks, mutatingRequests, pairConverged, scrape } from './harness/observe.js';
import { sleep } from './harness/wait.js';

const MTU = 1430;
const AGENT_ARGS = ['--resync-interval', '1h'];

describe('underlay missing or removed', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let agent: AgentHandle;
  let exited = false;
  const measured: Record<string, unknown> = {};
  const ns = () => dc.host('h1').ns;
  const address = () => `${dc.host('h1').underlayAddress}/64`;

  const ip = async (netns: string, ...args: string[]) => {
    const result = await dc.exec(netns, ['ip', ...args]);
    expect(result.code, `ip ${args.join(' ')}: ${result.stderr}`).toBe(0);
  };
  /** Renames the uplink; a rename needs the link down, which flushes its IPv6 address: put it back. */
  const renameUplink = async (from: string, to: string) => {
    await ip(ns(), 'link', 'set', from, 'down');
    await ip(ns(), 'link', 'set', from, 'name', to);
    await ip(ns(), 'link', 'set', to, 'up');
    await ip(ns(), 'addr', 'replace', address(), 'dev', to, 'nodad');
  };
  const status = async (hex: string) => {
    const value = await etcd.get(`/v1/hosts/h1/status/${hex}`).string();
    return value ? JSON.parse(value) : undefined;
  };
  const waitStatus = (hex: string, pred: (s: any) => boolean, what: string, timeoutMs = 10_000) =>
    waitFor(async () => {
      const s = await status(hex);
      return s && pred(s) ? s : undefined;
    }, `${what} (${hex})`, timeoutMs);
  const start = async () => {
    agent = await dc.startAgent('h1', AGENT_ARGS);
    exited = false;
    const handle = agent;
    void handle.exited.then(() => {
      if (handle === agent) exited = true;
    });
    await agent.waitReady();
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1'] });
    etcd = await dc.etcd();
    await etcd.put('/v1/networks/d1').value('{}');
    await etcd.put('/v1/networks/d2').value('{"mtu":1400}');
  });

  afterAll(async () => {
    console.log(`[resilience-underlay] observed: ${JSON.stringify(measured)}`);
    await dc?.destroy();
  });

  it('underlay missing at start: statuses say so, the agent stays up, existing devices are kept; when it appears, networks converge', async () => {
    // Devices from an earlier run of the agent.
    await start();
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'd1', MTU) && pairConverged(await managedLinks(dc, ns()), 'd2', 1400), 'd1, d2 converged');
    expect((await agent.stop('SIGTERM')).code).toBe(0);
    const before = await ifindexes(dc, ns());

    await renameUplink('u0', 'u0x');
    await start();
    for (const hex of ['d1', 'd2']) {
      const s = await waitStatus(hex, (x) => x.state === 'error', 'error status while the underlay is missing');
      expect(s.reason).toMatch(/underlay u0 not found/);
    }
    expect(agent.logs().some((l) => l.level >= 40 && /underlay u0 not found/.test(l.msg)), 'a log line names the missing underlay').toBe(true);
    // A network added meanwhile is reported too, and nothing is built for it.
    await etcd.put('/v1/networks/d3').value('{}');
    expect((await waitStatus('d3', (x) => x.state === 'error', 'error status for a new network')).reason).toMatch(/underlay u0 not found/);
    await sleep(500);
    expect(await ifindexes(dc, ns()), 'nothing deleted or created while the underlay is missing').toEqual(before);
    expect(mutatingRequests(await scrape(agent))).toEqual({ create: 0, change: 0, delete: 0 });
    expect(exited).toBe(false);
    expect(await httpStatus(agent, '/healthz')).toBe(200);

    await renameUplink('u0x', 'u0');
    for (const [hex, mtu] of [['d1', MTU], ['d2', 1400], ['d3', MTU]] as const) {
      await waitFor(async () => pairConverged(await managedLinks(dc, ns()), hex, mtu), `${hex} converged once u0 is back`);
      await waitStatus(hex, (x) => x.state === 'ready', 'ready once u0 is back');
    }
    const after = await ifindexes(dc, ns());
    for (const [name, index] of before) expect(after.get(name), `${name} kept (same ifindex)`).toBe(index);
  });

  it('underlay renamed away while converged: statuses report it, every device is kept; renamed back: ready, nothing re-created', async () => {
    const before = await ifindexes(dc, ns());
    expect(before.size).toBe(6);
    await renameUplink('u0', 'u0x');
    for (const hex of ['d1', 'd2', 'd3']) {
      expect((await waitStatus(hex, (x) => x.state === 'error', 'error status after the rename')).reason).toMatch(/underlay u0 not found/);
    }
    await sleep(300);
    // The vxlans still point at the (renamed) device: the kernel keeps them, and so does the agent.
    expect(await ifindexes(dc, ns())).toEqual(before);
    expect(exited).toBe(false);
    await renameUplink('u0x', 'u0');
    for (const hex of ['d1', 'd2', 'd3']) await waitStatus(hex, (x) => x.state === 'ready', 'ready after renaming back');
    expect(await ifindexes(dc, ns())).toEqual(before);
  });

  it('underlay removed (moved out of the namespace) while converged: bridges are kept, agent survives; when it is back, vxlans are re-created on the same bridges', async () => {
    const before = await managedLinks(dc, ns());
    const removedAt = Date.now();
    // Moving the device out unregisters it here, as a deletion would, and it can be brought back.
    await ip(ns(), 'link', 'set', 'u0', 'netns', dc.fabricNs);
    try {
      await agent.waitForLog((l) => l.time >= removedAt && /underlay u0 not found/.test(l.msg), 5_000);
      await sleep(1_000);
      const during = await managedLinks(dc, ns());
      measured['vxlans left after u0 left the namespace (the kernel deletes them)'] = [...during.keys()].filter((n) => n.startsWith('vxlan'));
      for (const hex of ['d1', 'd2', 'd3']) {
        expect(during.get(`br${hex}`)?.ifindex, `br${hex} kept`).toBe(before.get(`br${hex}`).ifindex);
      }
      expect(exited, 'agent still running without its underlay').toBe(false);
      measured['agent log while u0 was gone (warnings)'] = agent
        .logs()
        .filter((l) => l.time >= removedAt && l.level >= 40)
        .map((l) => `${l.msg}${l.err ? ` (${String(l.err).slice(0, 120)})` : ''}`)
        .slice(0, 12);
    } finally {
      await ip(dc.fabricNs, 'link', 'set', 'u0', 'netns', ns());
      await ip(ns(), 'link', 'set', 'u0', 'up');
      await ip(ns(), 'addr', 'replace', address(), 'dev', 'u0', 'nodad');
    }
    const backAt = Date.now();
    for (const [hex, mtu] of [['d1', MTU], ['d2', 1400], ['d3', MTU]] as const) {
      await waitFor(async () => pairConverged(await managedLinks(dc, ns()), hex, mtu), `${hex} converged once u0 is back`, 15_000);
    }
    measured['u0 back → all vxlans re-created (ms)'] = Date.now() - backAt;
    const after = await managedLinks(dc, ns());
    for (const hex of ['d1', 'd2', 'd3']) {
      expect(after.get(`br${hex}`).ifindex, `br${hex} is still the same bridge`).toBe(before.get(`br${hex}`).ifindex);
      expect(after.get(`vxlan${hex}`).linkinfo.info_data.link).toBe('u0');
    }
    for (const hex of ['d1', 'd2', 'd3']) await waitStatus(hex, (x) => x.state === 'ready', 'ready once u0 is back', 25_000);
    await agent.waitReady(25_000);
    expect(exited).toBe(false);
  });
});
