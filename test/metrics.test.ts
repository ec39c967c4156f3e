import perfHooks from 'node:perf_hooks';
import { describe, expect, it, vi } from 'vitest';
import { IFF_LOWER_UP, IFF_UP, type Link, type LinkStats } from '../src/model/link.js';
import { EVENT_LOOP_SAMPLE_MS, createMetrics, type AgentGauges } from '../src/metrics/metrics.js';
import { NETDEV_FAMILY_NAMES, escapeHelp, escapeLabelValue, formatValue, managedDevices } from '../src/metrics/netdev.js';

const UP = IFF_UP | IFF_LOWER_UP;

function stats(base: number): LinkStats {
  return {
    rxBytes: base + 1,
    rxPackets: base + 2,
    rxErrors: base + 3,
    rxDropped: base + 4,
    txBytes: base + 5,
    txPackets: base + 6,
    txErrors: base + 7,
    txDropped: base + 8,
  };
}

/** A host with one managed network (VNI 0x64) and devices that must not show up. */
function hostLinks(): Link[] {
  return [
    { index: 1, name: 'lo', flags: UP | 0x8, mtu: 65536, stats: stats(0) },
    { index: 2, name: 'u0', kind: 'veth', flags: UP, mtu: 1500, stats: stats(100) },
    { index: 3, name: 'br64', kind: 'bridge', alias: 'vxnetd:64', flags: UP, mtu: 1400, carrierChanges: 2, stats: stats(1000) },
    { index: 4, name: 'vxlan64', kind: 'vxlan', alias: 'vxnetd:64', master: 3, flags: IFF_UP, mtu: 1400, carrierChanges: 1, stats: stats(2000) },
    // Foreign: a vxlan somebody else made, with a name vxnetd would use.
    { index: 5, name: 'vxlan65', kind: 'vxlan', alias: 'not-ours', flags: UP, mtu: 1450, stats: stats(3000) },
    // Owner alias that is not canonical (upper case, leading zero): not ours.
    { index: 6, name: 'brff', kind: 'bridge', alias: 'vxnetd:FF', flags: UP, mtu: 1400, stats: stats(4000) },
    { index: 7, name: 'br66', kind: 'bridge', alias: 'vxnetd:066', flags: UP, mtu: 1400, stats: stats(5000) },
    // Canonical alias but neither a vxlan nor a bridge.
    { index: 8, name: 'veth66', kind: 'veth', alias: 'vxnetd:66', flags: UP, mtu: 1500, stats: stats(6000) },
  ];
}

class FakeKernel {
  calls = 0;
  links: Link[] = hostLinks();
  failWith: Error | undefined;
  throwSync = false;
  /** When set, dumps wait for release() (to hold a dump in flight). */
  gate: Promise<void> | undefined;

  dumpLinks = async (opts?: { stats?: boolean }): Promise<Link[]> => {
    this.calls++;
    if (!opts?.stats) throw new Error('metrics must ask for stats');
    if (this.gate) await this.gate;
    if (this.failWith) throw this.failWith;
    return structuredClone(this.links);
  };
}

function gauges(overrides: Partial<AgentGauges> = {}): AgentGauges {
  return {
    networksDesired: () => 3,
    networksReady: () => 2,
    networksError: () => 1,
    etcdConnected: () => true,
    watchRevision: () => 4711,
    ...overrides,
  };
}

/** Sample lines of an exposition: series (name{labels}) → value text. */
function samples(body: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), line.slice(space + 1));
  }
  return out;
}

const series = (name: string, device: string, vni: string, kind: string) => `${name}{device="${device}",vni="${vni}",kind="${kind}"}`;

/**
 * Checks the text format as Prometheus would: every sample belongs to a
 * family declared once with HELP and TYPE before its samples, no series twice,
 * label syntax valid, values parse as floats.
 */
function expectValidExposition(body: string): void {
  expect(body.endsWith('\n')).toBe(true);
  const declared = new Map<string, { help: boolean; type?: string }>();
  const seen = new Set<string>();
  const sampleLine = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$/;
  for (const line of body.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (meta) {
      const entry = declared.get(meta[2]!) ?? { help: false };
      if (meta[1] === 'HELP') {
        expect(entry.help, `HELP twice for ${meta[2]}`).toBe(false);
        entry.help = true;
      } else {
        expect(entry.type, `TYPE twice for ${meta[2]}`).toBeUndefined();
        entry.type = meta[3];
      }
      declared.set(meta[2]!, entry);
      continue;
    }
    const match = sampleLine.exec(line);
    expect(match, `malformed sample line: ${line}`).not.toBeNull();
    const name = match![1]!;
    const family = [name, name.replace(/_(bucket|sum|count)$/, '')].find((n) => declared.get(n)?.type);
    expect(family, `sample before HELP/TYPE: ${line}`).toBeDefined();
    const key = `${name}${match![2] ?? ''}`;
    expect(seen.has(key), `duplicate series ${key}`).toBe(false);
    seen.add(key);
    const value = match![3]!;
    // Go's ParseFloat, which Prometheus uses, takes NaN/Inf in any case (prom-client prints "Nan").
    expect(/^[+-]?(nan|inf|infinity)$/i.test(value) || !Number.isNaN(Number(value)), `bad value in ${line}`).toBe(true);
  }
}

describe('per-interface metrics', () => {
  it('renders exact values and labels for managed devices only', async () => {
    const kernel = new FakeKernel();
    const metrics = createMetrics({ kernel, gauges: gauges(), version: '0.1.0' });
    const result = await metrics.render();
    expect(result.status).toBe(200);
    expect(result.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
    expectValidExposition(result.body);
    const s = samples(result.body);

    const expected: Array<[string, keyof LinkStats]> = [
      ['vxnetd_network_receive_bytes_total', 'rxBytes'],
      ['vxnetd_network_receive_packets_total', 'rxPackets'],
      ['vxnetd_network_receive_errs_total', 'rxErrors'],
      ['vxnetd_network_receive_drop_total', 'rxDropped'],
      ['vxnetd_network_transmit_bytes_total', 'txBytes'],
      ['vxnetd_network_transmit_packets_total', 'txPackets'],
      ['vxnetd_network_transmit_errs_total', 'txErrors'],
      ['vxnetd_network_transmit_drop_total', 'txDropped'],
    ];
    for (const [name, field] of expected) {
      expect(s.get(series(name, 'br64', '64', 'bridge'))).toBe(String(stats(1000)[field]));
      expect(s.get(series(name, 'vxlan64', '64', 'vxlan'))).toBe(String(stats(2000)[field]));
      expect(result.body).toContain(`# TYPE ${name} counter\n`);
      expect(result.body).toMatch(new RegExp(`# HELP ${name} .*IFLA_STATS64.*scrape time`));
    }
    expect(s.get(series('vxnetd_network_mtu_bytes', 'br64', '64', 'bridge'))).toBe('1400');
    expect(s.get(series('vxnetd_network_mtu_bytes', 'vxlan64', '64', 'vxlan'))).toBe('1400');
    // up needs both IFF_UP and IFF_LOWER_UP.
    expect(s.get(series('vxnetd_network_up', 'br64', '64', 'bridge'))).toBe('1');
    expect(s.get(series('vxnetd_network_up', 'vxlan64', '64', 'vxlan'))).toBe('0');
    expect(s.get(series('vxnetd_network_carrier_changes_total', 'br64', '64', 'bridge'))).toBe('2');
    expect(s.get(series('vxnetd_network_carrier_changes_total', 'vxlan64', '64', 'vxlan'))).toBe('1');
    expect(result.body).toContain('# TYPE vxnetd_network_mtu_bytes gauge\n');
    expect(result.body).toContain('# TYPE vxnetd_network_up gauge\n');
    expect(result.body).toContain('# TYPE vxnetd_network_carrier_changes_total counter\n');
    expect(result.body).toContain('# TYPE vxnetd_network_info gauge\n');

    // Master resolved to a name from the same dump.
    expect(s.get('vxnetd_network_info{device="vxlan64",vni="64",kind="vxlan",master="br64",ifalias="vxnetd:64"}')).toBe('1');
    expect(s.get('vxnetd_network_info{device="br64",vni="64",kind="bridge",master="",ifalias="vxnetd:64"}')).toBe('1');

    // Exactly 2 devices × 12 families, nothing for lo, u0, the foreign vxlan,
    // the non-canonical aliases or the veth.
    const perInterface = [...s.keys()].filter((k) => k.startsWith('vxnetd_network_'));
    expect(perInterface).toHaveLength(2 * NETDEV_FAMILY_NAMES.length);
    for (const name of ['lo', 'u0', 'vxlan65', 'brff', 'br66', 'veth66']) {
      expect(result.body).not.toContain(`device="${name}"`);
    }
  });

  it('selects managed devices by canonical owner alias and kind', () => {
    expect(managedDevices(hostLinks()).map((d) => [d.link.name, d.vni, d.kind, d.master])).toEqual([
      ['br64', '64', 'bridge', ''],
      ['vxlan64', '64', 'vxlan', 'br64'],
    ]);
  });

  it('drops the series of a device that vanished between scrapes', async () => {
    const kernel = new FakeKernel();
    const metrics = createMetrics({ kernel, gauges: gauges(), version: '0.1.0' });
    const first = await metrics.render();
    expect(first.body).toContain('device="vxlan64"');

    kernel.links = kernel.links.filter((l) => l.name !== 'vxlan64');
    const second = await metrics.render();
    expect(second.status).toBe(200);
    expect(second.body).not.toContain('vxlan64');
    expect(samples(second.body).get(series('vxnetd_network_mtu_bytes', 'br64', '64', 'bridge'))).toBe('1400');

    // The family headers stay even with no managed device at all.
    kernel.links = kernel.links.filter((l) => l.name !== 'br64');
    const third = await metrics.render();
    expectValidExposition(third.body);
    expect(third.body).not.toMatch(/^vxnetd_network_/m);
    for (const name of NETDEV_FAMILY_NAMES) expect(third.body).toContain(`# TYPE ${name} `);
  });

  it('resolves a master that is not managed, and none when the master vanished mid-dump', async () => {
    const kernel = new FakeKernel();
    kernel.links.push(
      { index: 20, name: 'vxlan70', kind: 'vxlan', alias: 'vxnetd:70', master: 2, flags: UP, mtu: 1400, stats: stats(0) },
      { index: 21, name: 'vxlan71', kind: 'vxlan', alias: 'vxnetd:71', master: 99, flags: UP, mtu: 1400, stats: stats(0) },
    );
    const { body } = await createMetrics({ kernel, gauges: gauges(), version: 'x' }).render();
    expect(body).toContain('vxnetd_network_info{device="vxlan70",vni="70",kind="vxlan",master="u0",ifalias="vxnetd:70"} 1\n');
    expect(body).toContain('vxnetd_network_info{device="vxlan71",vni="71",kind="vxlan",master="",ifalias="vxnetd:71"} 1\n');
  });

  it('leaves out counters the kernel did not report instead of inventing zeros', async () => {
    const kernel = new FakeKernel();
    kernel.links = [{ index: 3, name: 'br64', kind: 'bridge', alias: 'vxnetd:64', flags: UP, mtu: 1400 }];
    const { body } = await createMetrics({ kernel, gauges: gauges(), version: 'x' }).render();
    expectValidExposition(body);
    expect(body).not.toMatch(/^vxnetd_network_(receive|transmit|carrier)/m);
    expect(body).toContain('vxnetd_network_mtu_bytes{device="br64",vni="64",kind="bridge"} 1400\n');
    expect(body).toContain('vxnetd_network_up{device="br64",vni="64",kind="bridge"} 1\n');
  });

  it('prints large 64-bit counters as numbers Prometheus parses, bigints exactly', async () => {
    const kernel = new FakeKernel();
    const vxlan = kernel.links.find((l) => l.name === 'vxlan64')!;
    vxlan.stats!.rxBytes = 2 ** 53 + 2;
    vxlan.stats!.txBytes = Number(2n ** 64n - 1n);
    // A Kernel implementation handing over bigints must not break the scrape.
    (vxlan.stats as unknown as Record<string, unknown>).rxPackets = 18446744073709551615n;
    const result = await createMetrics({ kernel, gauges: gauges(), version: 'x' }).render();
    expect(result.status).toBe(200);
    expectValidExposition(result.body);
    const s = samples(result.body);
    expect(s.get(series('vxnetd_network_receive_bytes_total', 'vxlan64', '64', 'vxlan'))).toBe('9007199254740994');
    const tx = s.get(series('vxnetd_network_transmit_bytes_total', 'vxlan64', '64', 'vxlan'))!;
    expect(tx).toBe('18446744073709552000');
    expect(Number(tx)).toBe(2 ** 64);
    expect(s.get(series('vxnetd_network_receive_packets_total', 'vxlan64', '64', 'vxlan'))).toBe('18446744073709551615');
    expect(formatValue(NaN)).toBe('NaN');
    expect(formatValue(Infinity)).toBe('+Inf');
    expect(formatValue(1e21)).toBe('1e+21');
  });

  it('escapes quotes and backslashes in label values', async () => {
    // A managed alias is always `vxnetd:<hex>`, so it cannot carry quotes;
    // device and master names can (Linux only forbids '/', ':' and whitespace).
    const kernel = new FakeKernel();
    kernel.links = [
      { index: 30, name: 'br"a\\b', kind: 'bridge', alias: 'vxnetd:99', flags: UP, mtu: 1400, stats: stats(0) },
      { index: 31, name: 'vxlan99', kind: 'vxlan', alias: 'vxnetd:99', master: 30, flags: UP, mtu: 1400, stats: stats(0) },
    ];
    const { body } = await createMetrics({ kernel, gauges: gauges(), version: 'x' }).render();
    expectValidExposition(body);
    expect(body).toContain('vxnetd_network_mtu_bytes{device="br\\"a\\\\b",vni="99",kind="bridge"} 1400\n');
    expect(body).toContain('vxnetd_network_info{device="vxlan99",vni="99",kind="vxlan",master="br\\"a\\\\b",ifalias="vxnetd:99"} 1\n');
    expect(escapeLabelValue('a"b\\c\nd')).toBe('a\\"b\\\\c\\nd');
    expect(escapeLabelValue('plain')).toBe('plain');
    expect(escapeHelp('say "x" \\ \n')).toBe('say "x" \\\\ \\n');
  });
});

describe('scrapes and the netlink dump', () => {
  it('dumps once per scrape, with stats', async () => {
    const kernel = new FakeKernel();
    const metrics = createMetrics({ kernel, gauges: gauges(), version: 'x' });
    await metrics.render();
    expect(kernel.calls).toBe(1);
    await metrics.render();
    expect(kernel.calls).toBe(2);
  });

  it('lets concurrent scrapes share the dump in flight', async () => {
    const kernel = new FakeKernel();
    let release!: () => void;
    kernel.gate = new Promise((resolve) => (release = resolve));
    const metrics = createMetrics({ kernel, gauges: gauges(), version: 'x' });
    const scrapes = [metrics.render(), metrics.render(), metrics.render()];
    await new Promise((resolve) => setTimeout(resolve, 10));
    release();
    const results = await Promise.all(scrapes);
    expect(kernel.calls).toBe(1);
    for (const r of results) expect(r.body).toContain('device="vxlan64"');
    // One render for all of them, not one each.
    expect(new Set(results).size).toBe(1);
    // Once settled, the next scrape reads the kernel again.
    kernel.gate = undefined;
    await metrics.render();
    expect(kernel.calls).toBe(2);
  });

  it('answers 503 with a one-line reason when the dump fails, and recovers', async () => {
    const kernel = new FakeKernel();
    const metrics = createMetrics({ kernel, gauges: gauges(), version: 'x' });
    kernel.failWith = new Error('dump links: ENOBUFS (kernel out of buffer space,\ne.g. multicast group memberships)');
    const failed = await metrics.render();
    expect(failed.status).toBe(503);
    expect(failed.contentType).toMatch(/^text\/plain/);
    expect(failed.body).toMatch(/^netlink link dump .*failed: dump links: ENOBUFS \(kernel out of buffer space, e\.g\. multicast group memberships\)\n$/);
    expect(failed.body.trimEnd().split('\n')).toHaveLength(1);

    kernel.failWith = undefined;
    const next = await metrics.render();
    expect(next.status).toBe(200);
    expect(next.body).toContain('device="vxlan64"');
  });

  it('survives a dumpLinks that throws synchronously', async () => {
    const metrics = createMetrics({
      kernel: {
        dumpLinks: () => {
          throw new Error('socket closed');
        },
      },
      gauges: gauges(),
      version: 'x',
    });
    const result = await metrics.render();
    expect(result.status).toBe(503);
    expect(result.body).toContain('socket closed');
  });

  it('answers 503 when an agent gauge throws, and recovers', async () => {
    let broken = true;
    const metrics = createMetrics({
      kernel: new FakeKernel(),
      gauges: gauges({
        watchRevision: () => {
          if (broken) throw new Error('store not started');
          return 9;
        },
      }),
      version: 'x',
    });
    const failed = await metrics.render();
    expect(failed.status).toBe(503);
    expect(failed.body).toBe('collecting agent metrics failed: store not started\n');
    broken = false;
    const next = await metrics.render();
    expect(next.status).toBe(200);
    expect(samples(next.body).get('vxnetd_etcd_watch_revision')).toBe('9');
  });
});

describe('agent metrics', () => {
  it('reads the agent gauges at scrape time and counts what it is told', async () => {
    let connected = true;
    let desired = 3;
    const metrics = createMetrics({
      kernel: new FakeKernel(),
      gauges: gauges({ etcdConnected: () => connected, networksDesired: () => desired }),
      version: '1.2.3',
    });
    metrics.observeReconcile(0.003);
    metrics.observeReconcile(2);
    metrics.countNetlinkRequest('create', 'ok');
    metrics.countNetlinkRequest('create', 'ok');
    metrics.countNetlinkRequest('create', 'EEXIST');
    metrics.countSpecError('mtu');

    let result = await metrics.render();
    expect(result.status).toBe(200);
    expectValidExposition(result.body);
    let s = samples(result.body);
    expect(s.get('vxnetd_networks_desired')).toBe('3');
    expect(s.get('vxnetd_networks_ready')).toBe('2');
    expect(s.get('vxnetd_networks_error')).toBe('1');
    expect(s.get('vxnetd_etcd_connected')).toBe('1');
    expect(s.get('vxnetd_etcd_watch_revision')).toBe('4711');
    expect(s.get(`vxnetd_build_info{version="1.2.3",nodejs_version="${process.version}"}`)).toBe('1');
    expect(s.get('vxnetd_netlink_requests_total{op="create",result="ok"}')).toBe('2');
    expect(s.get('vxnetd_netlink_requests_total{op="create",result="EEXIST"}')).toBe('1');
    expect(s.get('vxnetd_spec_errors_total{reason="mtu"}')).toBe('1');
    expect(s.get('vxnetd_reconcile_duration_seconds_count')).toBe('2');
    expect(s.get('vxnetd_reconcile_duration_seconds_bucket{le="0.001"}')).toBe('0');
    expect(s.get('vxnetd_reconcile_duration_seconds_bucket{le="0.005"}')).toBe('1');
    expect(s.get('vxnetd_reconcile_duration_seconds_bucket{le="10"}')).toBe('2');
    expect(s.get('vxnetd_reconcile_duration_seconds_bucket{le="+Inf"}')).toBe('2');
    // prom-client's default process metrics on the same registry.
    expect(s.has('process_cpu_user_seconds_total')).toBe(true);
    expect([...s.keys()].some((k) => k.startsWith('nodejs_version_info'))).toBe(true);

    connected = false;
    desired = 5;
    result = await metrics.render();
    s = samples(result.body);
    expect(s.get('vxnetd_etcd_connected')).toBe('0');
    expect(s.get('vxnetd_networks_desired')).toBe('5');
  });

  it('keeps registries apart between instances (no global registry)', async () => {
    const a = createMetrics({ kernel: new FakeKernel(), gauges: gauges(), version: 'a' });
    const b = createMetrics({ kernel: new FakeKernel(), gauges: gauges(), version: 'b' });
    a.countSpecError('json');
    expect(a.registry).not.toBe(b.registry);
    expect((await b.render()).body).not.toContain('vxnetd_spec_errors_total{reason="json"}');
    expect((await a.render()).body).toContain('vxnetd_spec_errors_total{reason="json"} 1\n');
  });
});

describe('default process metrics', () => {
  it('samples event-loop delay every 100 ms, not every 10 ms (100 wake-ups a second, most of an idle agent\'s CPU)', async () => {
    const monitor = vi.spyOn(perfHooks, 'monitorEventLoopDelay');
    try {
      const { body } = await createMetrics({ kernel: new FakeKernel(), gauges: gauges(), version: 'x' }).render();
      expect(EVENT_LOOP_SAMPLE_MS).toBe(100);
      expect(monitor).toHaveBeenCalledWith({ resolution: 100 });
      expect(samples(body).has('nodejs_eventloop_lag_p99_seconds')).toBe(true);
    } finally {
      monitor.mockRestore();
    }
  });
});
