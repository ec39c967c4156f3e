/**
 * Issue 4, etcd outages (DESIGN.md §3.4): the data plane is kept while etcd
 * is frozen, killed or unreachable; the agent reports not-ready, reconnects,
 * lists again and applies what changed meanwhile, also across a compaction.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle, type VmHandle } from './harness/datacentre.js';
import { httpStatus, ifindexes, mutatingRequests, pairConverged, managedLinks, scrape, sumSamples, type MutatingRequests, readStatus } from './harness/observe.js';
import { sleep } from './harness/wait.js';

const MTU = 1430;

describe('etcd outages', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  const agents: Record<string, AgentHandle> = {};
  const exited: Record<string, boolean> = {};
  let vma: VmHandle;
  let vmb: VmHandle;
  const measured: Record<string, number> = {};

  const hosts = ['h1', 'h2'] as const;
  const ns = (host: string) => dc.host(host).ns;
  const status = (host: string, hex: string) => readStatus(etcd, host, hex);
  const connected = async (host: string) => sumSamples(await scrape(agents[host]!), 'vxnetd_etcd_connected');
  const requests = async (host: string) => mutatingRequests(await scrape(agents[host]!));
  const delta = (a: MutatingRequests, b: MutatingRequests) => ({ create: b.create - a.create, change: b.change - a.change, delete: b.delete - a.delete });
  const converged = async (host: string, hex: string) => pairConverged(await managedLinks(dc, ns(host)), hex, MTU);
  const gone = async (host: string, hex: string) => {
    const links = await managedLinks(dc, ns(host));
    return !links.has(`vxlan${hex}`) && !links.has(`br${hex}`);
  };
  /** A promise that rejects if `ms` pass first: dc.etcd() calls hang while etcd is frozen. */
  const within = <T>(promise: Promise<T>, ms: number, what: string) =>
    Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`${what}: no answer within ${ms} ms`)))]);
  const fabricPort = async (host: string, state: 'up' | 'down') => {
    const result = await dc.exec(dc.fabricNs, ['ip', 'link', 'set', dc.host(host).fabricPort, state]);
    expect(result.code, result.stderr).toBe(0);
  };
  const logsSince = (host: string, since: number) => agents[host]!.logs().filter((l) => typeof l.time === 'number' && l.time >= since);
  const assertAlive = () => {
    for (const host of hosts) expect(exited[host], `agent ${host} still running`).toBe(false);
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    etcd = await dc.etcd();
    for (const hex of ['e1', 'e2', 'e3']) await etcd.put(`/v1/networks/${hex}`).value('{}');
    for (const host of hosts) {
      // Only link events and etcd lists may change anything during these tests.
      agents[host] = await dc.startAgent(host, ['--resync-interval', '1h']);
      exited[host] = false;
      void agents[host].exited.then(() => (exited[host] = true));
    }
    for (const host of hosts) await agents[host]!.waitReady();
    for (const host of hosts) for (const hex of ['e1', 'e2', 'e3']) await waitFor(() => converged(host, hex), `${hex} on ${host}`);
    vma = await dc.addVm('h1', 'bre1', 'vma', '2001:db8:e1::1');
    vmb = await dc.addVm('h2', 'bre1', 'vmb', '2001:db8:e1::2');
    // The first packets can be lost while the hosts' vxlans join their group on a busy machine.
    await waitFor(() => dc.ping(vma, vmb.address, { count: 3, timeoutS: 3 }), 'vma reaches vmb across the overlay', 20_000);
  });

  afterAll(async () => {
    dc?.stopEtcd('SIGCONT');
    if (Object.keys(measured).length) console.log(`[resilience-etcd] measured (ms): ${JSON.stringify(measured)}`);
    await dc?.destroy();
  });

  it('etcd frozen (SIGSTOP): not ready within ~10 s, data plane untouched, agent alive; after SIGCONT ready again and changes applied', async () => {
    const before = { h1: await ifindexes(dc, ns('h1')), h2: await ifindexes(dc, ns('h2')) };
    const reqBefore = { h1: await requests('h1'), h2: await requests('h2') };
    const frozenAt = Date.now();
    dc.stopEtcd('SIGSTOP');
    try {
      for (const host of hosts) {
        await waitFor(async () => (await httpStatus(agents[host]!, '/readyz')) === 503 && (await connected(host)) === 0, `${host} not ready, etcd_connected 0`, 12_000, 100);
        measured[`frozen → ${host} not ready`] = Date.now() - frozenAt;
      }
      expect(Date.now() - frozenAt).toBeLessThan(12_000);
      // Keep it frozen a while longer: several failed reconnects must not touch anything.
      await sleep(Math.max(0, 10_000 - (Date.now() - frozenAt)));
      for (const host of hosts) {
        expect(await httpStatus(agents[host]!, '/healthz'), `${host} /healthz`).toBe(200);
        expect(await httpStatus(agents[host]!, '/readyz'), `${host} /readyz while frozen`).toBe(503);
        expect(await ifindexes(dc, ns(host)), `${host} devices untouched`).toEqual(before[host]);
        expect(delta(reqBefore[host], await requests(host)), `${host}: no mutating netlink request while frozen`).toEqual({ create: 0, change: 0, delete: 0 });
        expect(logsSince(host, frozenAt).some((l) => /etcd connection lost/.test(l.msg)), `${host} logged the outage`).toBe(true);
      }
      expect(await dc.ping(vma, vmb.address, { count: 2, timeoutS: 2 }), 'overlay works while etcd is frozen').toBe(true);
      assertAlive();
    } finally {
      dc.stopEtcd('SIGCONT');
    }
    const thawedAt = Date.now();
    for (const host of hosts) {
      await waitFor(async () => (await httpStatus(agents[host]!, '/readyz')) === 200 && (await connected(host)) === 1, `${host} ready again after SIGCONT`, 25_000, 100);
      measured[`SIGCONT → ${host} ready`] = Date.now() - thawedAt;
    }
    // A change right after the thaw is applied on every host.
    const changedAt = Date.now();
    await within(etcd.put('/v1/networks/e4').value('{}').exec(), 10_000, 'put e4 after SIGCONT');
    await within(etcd.delete().key('/v1/networks/e3').exec(), 10_000, 'delete e3 after SIGCONT');
    for (const host of hosts) {
      await waitFor(() => converged(host, 'e4'), `e4 created on ${host}`, 15_000);
      await waitFor(() => gone(host, 'e3'), `e3 removed on ${host}`, 15_000);
      await waitFor(async () => (await status(host, 'e4'))?.state === 'ready', `status e4 ready on ${host}`, 15_000);
      await waitFor(async () => (await status(host, 'e3')) === undefined, `status e3 removed on ${host}`, 15_000);
    }
    measured['change after thaw applied on both hosts'] = Date.now() - changedAt;
    const after = await ifindexes(dc, ns('h1'));
    for (const device of ['vxlane1', 'bre1', 'vxlane2', 'bre2']) expect(after.get(device), device).toBe(before.h1.get(device));
    assertAlive();
  });

  it('etcd killed (SIGTERM) and restarted: devices stay while it is down; puts and deletes after the restart are applied', async () => {
    const before = { h1: await ifindexes(dc, ns('h1')), h2: await ifindexes(dc, ns('h2')) };
    const reqBefore = { h1: await requests('h1'), h2: await requests('h2') };
    const pid = dc.etcdPid;
    const killedAt = Date.now();
    dc.stopEtcd('SIGTERM');
    await waitFor(async () => dc.etcdPid === undefined, 'etcd exited', 10_000);
    expect(pid).toBeDefined();
    for (const host of hosts) {
      await waitFor(async () => (await httpStatus(agents[host]!, '/readyz')) === 503 && (await connected(host)) === 0, `${host} not ready while etcd is down`, 12_000, 100);
      measured[`etcd killed → ${host} not ready`] = Date.now() - killedAt;
    }
    // Down for a while: several reconnect attempts fail.
    await sleep(Math.max(0, 6_000 - (Date.now() - killedAt)));
    for (const host of hosts) {
      expect(await ifindexes(dc, ns(host)), `${host} devices untouched while etcd is down`).toEqual(before[host]);
      expect(delta(reqBefore[host], await requests(host))).toEqual({ create: 0, change: 0, delete: 0 });
    }
    expect(await dc.ping(vma, vmb.address, { count: 2, timeoutS: 2 })).toBe(true);
    assertAlive();

    await dc.restartEtcd();
    const restartedAt = Date.now();
    etcd = await dc.etcd();
    for (const host of hosts) {
      await waitFor(async () => (await httpStatus(agents[host]!, '/readyz')) === 200, `${host} ready after the etcd restart`, 25_000, 100);
      measured[`etcd restarted → ${host} ready`] = Date.now() - restartedAt;
    }
    await etcd.put('/v1/networks/e5').value('{}');
    await etcd.delete().key('/v1/networks/e4');
    for (const host of hosts) {
      await waitFor(() => converged(host, 'e5'), `e5 created on ${host}`, 15_000);
      await waitFor(() => gone(host, 'e4'), `e4 removed on ${host}`, 15_000);
      await waitFor(async () => (await status(host, 'e5'))?.state === 'ready', `status e5 on ${host}`, 15_000);
    }
    const after = await ifindexes(dc, ns('h1'));
    for (const device of ['vxlane1', 'bre1', 'vxlane2', 'bre2']) expect(after.get(device), device).toBe(before.h1.get(device));
    assertAlive();
  });

  it('changes made while a host was cut off from etcd are applied when it is back, nothing else touched', async () => {
    const before = await ifindexes(dc, ns('h1'));
    const reqBefore = await requests('h1');
    const cutAt = Date.now();
    await fabricPort('h1', 'down');
    try {
      // The agent's /metrics is unreachable too: its log tells when it noticed.
      await agents.h1!.waitForLog((l) => l.time >= cutAt && /etcd connection lost/.test(l.msg), 15_000);
      measured['cut off → h1 noticed'] = Date.now() - cutAt;
      await etcd.delete().key('/v1/networks/e2');
      await etcd.put('/v1/networks/e6').value('{}');
      // h2 sees both at once; h1 must not.
      await waitFor(async () => (await gone('h2', 'e2')) && (await converged('h2', 'e6')), 'changes applied on h2', 15_000);
      expect(await converged('h1', 'e2'), 'e2 still on the cut-off h1').toBe(true);
      expect(await gone('h1', 'e6'), 'e6 not yet on the cut-off h1').toBe(true);
    } finally {
      await fabricPort('h1', 'up');
    }
    const backAt = Date.now();
    await waitFor(async () => (await gone('h1', 'e2')) && (await converged('h1', 'e6')), 'h1 applied the changes made while cut off', 25_000, 100);
    measured['reconnected → changes applied on h1'] = Date.now() - backAt;
    await waitFor(async () => (await status('h1', 'e6'))?.state === 'ready' && (await status('h1', 'e2')) === undefined, 'h1 statuses updated', 15_000);
    await agents.h1!.waitReady(5_000);
    const after = await ifindexes(dc, ns('h1'));
    for (const [device, index] of before) {
      if (device.endsWith('e2')) continue;
      expect(after.get(device), `${device} untouched`).toBe(index);
    }
    // Exactly: e2's two devices deleted, e6's two created (each create is followed by two changes: mtu/alias/addrgenmode, then up).
    expect(delta(reqBefore, await requests('h1'))).toEqual({ create: 2, change: 4, delete: 2 });
    assertAlive();
  });

  it('compaction while cut off: the agent lists again and applies a deletion whose event was compacted away', async () => {
    const before = await ifindexes(dc, ns('h1'));
    const cutAt = Date.now();
    await fabricPort('h1', 'down');
    let compactedTo = 0;
    let e1Revision = 0;
    try {
      await agents.h1!.waitForLog((l) => l.time >= cutAt && /etcd connection lost/.test(l.msg), 15_000);
      await etcd.delete().key('/v1/networks/e5');
      // Many revisions on the watched prefix (an unknown field changes nothing in the kernel), then one more network.
      for (let i = 0; i < 200; i++) await etcd.put('/v1/networks/e1').value(JSON.stringify({ note: `revision ${i}` }));
      await etcd.put('/v1/networks/e7').value('{}');
      const latest = await etcd.get('/v1/networks/e1').exec();
      e1Revision = Number(latest.kvs[0]!.mod_revision);
      compactedTo = Number(latest.header.revision);
      await etcd.kv.compact({ revision: String(compactedTo), physical: true });
      // The history is really gone: a watch from before the compaction is refused.
      await expect(etcd.get('/v1/networks/e5').revision(String(compactedTo - 100)).exec()).rejects.toThrow(/compacted/);
    } finally {
      await fabricPort('h1', 'up');
    }
    await waitFor(async () => (await gone('h1', 'e5')) && (await converged('h1', 'e7')), 'h1 removed e5 and created e7 after the compaction', 25_000, 100);
    await agents.h1!.waitReady(5_000);
    const s = await waitFor(async () => {
      const value = await status('h1', 'e1');
      return value?.specRevision === e1Revision ? value : undefined;
    }, 'status of e1 on h1 carries the latest spec revision', 5_000).catch(async (error: Error) => {
      const trail = logsSince('h1', cutAt).map((l) => `+${l.time - cutAt}ms ${l.level} ${l.msg} ${l.err ?? l.reason ?? ''}`);
      throw new Error(`${error.message}\nstatus in etcd: ${JSON.stringify(await status('h1', 'e1'))} (e1 at ${e1Revision}, compacted to ${compactedTo})\nagent log since the cut:\n${trail.join('\n')}`);
    });
    expect(s.state).toBe('ready');
    const logs = logsSince('h1', cutAt);
    expect(logs.some((l) => /etcd watch broken|etcd unavailable/.test(l.msg)), 'log says the watch broke').toBe(true);
    expect(logs.some((l) => /connected to etcd/.test(l.msg) && l.connected === true), 'log says it reconnected').toBe(true);
    expect(sumSamples(await scrape(agents.h1!), 'vxnetd_etcd_watch_revision')).toBeGreaterThanOrEqual(compactedTo);
    const after = await ifindexes(dc, ns('h1'));
    for (const device of ['vxlane1', 'bre1', 'vxlane6', 'bre6']) expect(after.get(device), `${device} untouched`).toBe(before.get(device));
    assertAlive();
  });

  it('watch compacted under a live stream (agent frozen while etcd moves on and compacts): the agent lists again', async () => {
    // The agent's own connection stays up, but it reads nothing while frozen:
    // etcd's send buffers fill, its watcher falls behind, and after the
    // compaction etcd can only cancel that watch. Only a new list recovers.
    const agent = agents.h1!;
    const frozenAt = Date.now();
    process.kill(agent.pid, 'SIGSTOP');
    let compactedTo = 0;
    try {
      const pad = 'x'.repeat(4_000);
      for (let round = 0; round < 8; round++) {
        await Promise.all(Array.from({ length: 50 }, (_, i) => etcd.put('/v1/networks/e1').value(JSON.stringify({ note: `${round}/${i}`, pad }))));
      }
      await etcd.delete().key('/v1/networks/e7');
      await etcd.put('/v1/networks/e8').value('{}');
      compactedTo = Number((await etcd.get('/v1/networks/e1').exec()).header.revision);
      await etcd.kv.compact({ revision: String(compactedTo), physical: true });
    } finally {
      process.kill(agent.pid, 'SIGCONT');
    }
    measured['agent frozen for'] = Date.now() - frozenAt;
    await waitFor(async () => (await gone('h1', 'e7')) && (await converged('h1', 'e8')), 'h1 removed e7 and created e8', 25_000, 100);
    await agent.waitReady(10_000);
    const reasons = logsSince('h1', frozenAt)
      .filter((l) => /etcd watch broken/.test(l.msg))
      .map((l) => String(l.reason));
    // Precondition of the scenario: etcd did cancel the watch (compacted), it did not just catch up.
    expect(reasons.some((r) => /canceled|compact/i.test(r)), `watch broken reasons: ${JSON.stringify(reasons)}`).toBe(true);
    expect(logsSince('h1', frozenAt).some((l) => /connected to etcd/.test(l.msg) && l.connected === true), 'listed again and reconnected').toBe(true);
    const s = await waitFor(async () => (await status('h1', 'e8'))?.state === 'ready' && status('h1', 'e8'), 'status of e8 on h1', 15_000);
    expect(s.specRevision).toBeLessThanOrEqual(compactedTo);
    assertAlive();
  });
});
