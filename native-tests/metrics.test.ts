/**
 * /metrics end to end (DESIGN.md §4): the real agent, real kernel counters.
 * Kernel counters are read with `ip -s -j link show` right before and right
 * after a scrape, while VM traffic flows: each exported value must lie
 * between the two readings (counters are monotonic, and the agent's one
 * RTM_GETLINK dump happens in between).
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle, type VmHandle } from './harness/datacentre.js';
import { parseSamples } from './harness/observe.js';


const KIND = { vxlan64: 'vxlan', br64: 'bridge' } as const;
type Device = keyof typeof KIND;
const series = (name: string, device: Device) => `${name}{device="${device}",vni="64",kind="${KIND[device]}"}`;

/** Metric family → where `ip -s -j` keeps the same IFLA_STATS64 field. */
const COUNTERS: Array<[string, 'rx' | 'tx', 'bytes' | 'packets' | 'errors' | 'dropped']> = [
  ['vxnetd_network_receive_bytes_total', 'rx', 'bytes'],
  ['vxnetd_network_receive_packets_total', 'rx', 'packets'],
  ['vxnetd_network_receive_errs_total', 'rx', 'errors'],
  ['vxnetd_network_receive_drop_total', 'rx', 'dropped'],
  ['vxnetd_network_transmit_bytes_total', 'tx', 'bytes'],
  ['vxnetd_network_transmit_packets_total', 'tx', 'packets'],
  ['vxnetd_network_transmit_errs_total', 'tx', 'errors'],
  ['vxnetd_network_transmit_drop_total', 'tx', 'dropped'],
];

describe('vxnetd /metrics against the kernel', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let h1: AgentHandle;
  let vma: VmHandle;
  let vmb: VmHandle;

  /**
   * One GET, tried once more if the server closed a kept-alive connection as it was reused: after the
   * scrape flood the pool holds sockets the server is timing out (the race every HTTP client retries).
   */
  const get = async () => {
    try {
      return await fetch(`${h1.metricsUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
    } catch (error) {
      if ((error as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw error;
      return fetch(`${h1.metricsUrl}/metrics`, { signal: AbortSignal.timeout(5_000) });
    }
  };
  const scrape = async () => {
    const response = await get();
    const body = await response.text();
    expect(response.status, body.slice(0, 300)).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    return body;
  };

  /** IFLA_STATS64 of vxlan64 and br64 on h1, as `ip -s -j link show` reports them. */
  const kernelStats = async () => {
    const result = await dc.exec(dc.host('h1').ns, ['ip', '-s', '-j', 'link', 'show']);
    expect(result.code, result.stderr).toBe(0);
    const links = JSON.parse(result.stdout) as any[];
    const byName = (name: Device) => {
      const link = links.find((l) => l.ifname === name);
      expect(link, `${name} on h1`).toBeDefined();
      return link.stats64 as Record<'rx' | 'tx', Record<string, number>>;
    };
    return { vxlan64: byName('vxlan64'), br64: byName('br64') };
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    etcd = await dc.etcd();
    await etcd.put('/v1/networks/64').value(JSON.stringify({ mtu: 1400 }));
    h1 = await dc.startAgent('h1');
    const h2 = await dc.startAgent('h2');
    await Promise.all([h1.waitReady(), h2.waitReady()]);
    for (const host of ['h1', 'h2']) {
      await waitFor(async () => (await dc.link(dc.host(host).ns, 'br64')) && (await dc.link(dc.host(host).ns, 'vxlan64')), `br64 and vxlan64 on ${host}`);
    }
    vma = await dc.addVm('h1', 'br64', 'vma', '2001:db8:64::1', { mtu: 1400 });
    vmb = await dc.addVm('h2', 'br64', 'vmb', '2001:db8:64::2', { mtu: 1400 });
    // Traffic through both devices, so the counters are not all zero.
    expect(await dc.ping(vma, '2001:db8:64::2', { count: 3, timeoutS: 3 })).toBe(true);
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('exports counters that lie between kernel readings taken before and after the scrape', async () => {
    // Traffic flows during the measurements (one echo every 0.2 s), so some
    // brackets are not trivially before = after: that is checked too.
    let trafficDone = false;
    const traffic = dc.ping(vmb, '2001:db8:64::1', { count: 15 }).finally(() => (trafficDone = true));
    let rounds = 0;
    let moved = 0;
    while (rounds < 3 || !trafficDone) {
      const before = await kernelStats();
      const samples = parseSamples(await scrape());
      const after = await kernelStats();
      for (const device of ['vxlan64', 'br64'] as const) {
        for (const [name, direction, field] of COUNTERS) {
          const value = samples.get(series(name, device));
          const low = before[device][direction]![field]!;
          const high = after[device][direction]![field]!;
          const what = `${name} of ${device} (round ${rounds})`;
          expect(value, `${what} missing`).toBeDefined();
          expect(value!, `${what} ≥ kernel before`).toBeGreaterThanOrEqual(low);
          expect(value!, `${what} ≤ kernel after`).toBeLessThanOrEqual(high);
          if (high > low) moved++;
        }
      }
      // The pings of beforeAll went through both devices.
      expect(samples.get(series('vxnetd_network_transmit_packets_total', 'vxlan64'))).toBeGreaterThan(0);
      expect(samples.get(series('vxnetd_network_receive_packets_total', 'vxlan64'))).toBeGreaterThan(0);
      expect(samples.get(series('vxnetd_network_receive_bytes_total', 'br64'))).toBeGreaterThan(0);
      rounds++;
    }
    expect(await traffic).toBe(true);
    expect(moved, `counters never moved during a scrape in ${rounds} rounds: the brackets proved nothing`).toBeGreaterThan(0);
  });

  it('exports mtu, up, carrier changes and info labels of both devices, and nothing for other devices', async () => {
    const body = await scrape();
    const samples = parseSamples(body);
    for (const device of ['vxlan64', 'br64'] as const) {
      expect(samples.get(series('vxnetd_network_mtu_bytes', device)), `mtu of ${device}`).toBe(1400);
      expect(samples.get(series('vxnetd_network_up', device)), `up of ${device}`).toBe(1);
      expect(samples.get(series('vxnetd_network_carrier_changes_total', device)), `carrier changes of ${device}`).toBeGreaterThanOrEqual(0);
    }
    expect(body).toMatch(/^vxnetd_network_info\{device="vxlan64",vni="64",kind="vxlan",master="br64",ifalias="vxnetd:64 host=h1 etcd=[0-9a-f]{16} prefix=\/v1 net=\d+"\} 1$/m);
    expect(body).toMatch(/^vxnetd_network_info\{device="br64",vni="64",kind="bridge",master="",ifalias="vxnetd:64 host=h1 etcd=[0-9a-f]{16} prefix=\/v1 net=\d+"\} 1$/m);
    // Only managed devices: not the underlay, loopback or the VM's port.
    for (const other of ['u0', 'lo', 'vm-vma']) expect(body).not.toContain(`device="${other}"`);
    expect([...samples.keys()].filter((k) => k.startsWith('vxnetd_network_info{'))).toHaveLength(2);

    // Agent metrics on the same page.
    expect(samples.get('vxnetd_networks_desired')).toBe(1);
    expect(samples.get('vxnetd_networks_ready')).toBe(1);
    expect(samples.get('vxnetd_networks_error')).toBe(0);
    expect(samples.get('vxnetd_etcd_connected')).toBe(1);
    expect(samples.get('vxnetd_etcd_watch_revision')).toBeGreaterThan(0);
    expect([...samples.keys()].some((k) => k.startsWith('vxnetd_build_info{version="'))).toBe(true);
    expect(samples.has('process_resident_memory_bytes')).toBe(true);
  });

  it('a flood of scrapes (64 clients at once, back to back) does not delay the repair of a deleted vxlan beyond a second', async () => {
    const ns = dc.host('h1').ns;
    const stop = AbortSignal.timeout(4_000);
    let answered = 0;
    let refused = 0;
    const client = async () => {
      while (!stop.aborted) {
        try {
          const response = await fetch(`${h1.metricsUrl}/metrics`, { signal: AbortSignal.any([stop, AbortSignal.timeout(2_000)]) });
          await response.text();
          answered++;
        } catch {
          refused++;
        }
      }
    };
    const clients = Array.from({ length: 64 }, client);
    await new Promise((resolve) => setTimeout(resolve, 500));
    const before = (await dc.link(ns, 'vxlan64')).ifindex;
    const started = performance.now();
    expect((await dc.exec(ns, ['ip', 'link', 'del', 'vxlan64'])).code).toBe(0);
    await waitFor(async () => {
      const link = await dc.link(ns, 'vxlan64');
      return link && link.ifindex !== before && link.master === 'br64' && link.flags.includes('UP') ? link : undefined;
    }, 'vxlan64 re-created during the flood', 5_000, 10);
    const repairMs = performance.now() - started;
    await Promise.all(clients);
    console.log(`[metrics] repair during a scrape flood: ${Math.round(repairMs)} ms; ${answered} scrapes answered, ${refused} cut off or refused`);
    expect(answered).toBeGreaterThan(0);
    expect(repairMs).toBeLessThan(1_000);
  });

  it('drops the series of both devices once the network is deleted', async () => {
    await etcd.delete().key('/v1/networks/64');
    const ns = dc.host('h1').ns;
    await waitFor(async () => !(await dc.link(ns, 'vxlan64')) && !(await dc.link(ns, 'br64')), 'vxlan64 and br64 to be deleted on h1');
    const body = await scrape();
    expect(body).not.toContain('device="vxlan64"');
    expect(body).not.toContain('device="br64"');
    // The families stay declared, just empty.
    expect(body).toContain('# TYPE vxnetd_network_receive_bytes_total counter');
    expect(parseSamples(body).get('vxnetd_networks_desired')).toBe(0);
  });
});
