/**
 * Restart over N converged networks: time to ready and mutating netlink
 * requests of the new agent (target: none), and the agent's own /metrics
 * scrape at 2N managed devices.
 *
 *   sudo npx tsx bench/restart.ts [--networks 1000]
 *
 * 1. N networks in etcd, agent started and converged (checked with a dump).
 * 2. `ip -ts -o monitor link` starts in the namespace; ifindexes are noted.
 * 3. SIGTERM the agent (timed until it exited), then start a new one: timed
 *    from spawn to the first GET /readyz = 200 (polled every 10 ms).
 * 4. The new agent's vxnetd_netlink_requests_total{op="create"|"change"|
 *    "delete"} must be absent or 0; one more second later, the monitor must
 *    have seen no notification for a managed device over the whole stop and
 *    start, and every ifindex must be unchanged.
 * 5. --scrapes GET /metrics of the running agent, p50/p95 (the real agent
 *    over HTTP, N networks = 2N managed devices; bench/metrics-scrape.ts
 *    compares with node_exporter).
 */
import {
  assertConverged,
  startConverged,
  fmt,
  foreignActivity,
  LinkMonitor,
  links,
  log,
  logTime,
  machine,
  main,
  netlinkRequests,
  networks,
  now,
  parseArgs,
  percentile,
  quiesce,
  record,
  scrape,
  sleep,
  startAgent,
  table,
  waitReadyAt,
  withDataCentre,
} from './lib.js';

const args = parseArgs('sudo npx tsx bench/restart.ts --networks 1000', {
  networks: { default: 1000, help: 'converged networks to restart over' },
  scrapes: { default: 20, help: 'GET /metrics of the restarted agent, for its scrape time (0: skip)' },
  logLevel: { default: 'info', help: "the agent's --log-level" },
  fillChunk: { default: 0, help: '0: all keys in etcd before the first agent starts; K: put them K at a time into the running agent' },
});

main(async () => {
  const N = args.networks;
  const nets = networks(N);
  const managed = new Set(nets.flatMap((n) => [n.bridge, n.vxlan]));
  const foreign = foreignActivity();
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);
  const r = {
    networks: N,
    fillChunk: args.fillChunk,
    stopMs: 0,
    stopCode: null as number | null,
    readyMs: 0,
    nodeStartMs: undefined as number | undefined,
    mutating: 0,
    requests: {} as Record<string, number>,
    events: 0,
    eventSample: [] as string[],
    ifindexChanged: 0,
    scrapeMs: [] as number[],
    scrapeBytes: 0,
    scrapeDevices: 0,
    monitorOverflow: false,
    foreign,
  };

  await withDataCentre(['rs'], async (dc) => {
    const ns = dc.host('rs').ns;
    const first = await startConverged(dc, 'rs', nets, { chunk: args.fillChunk, agentArgs: ['--log-level', String(args.logLevel)] });
    // Let status writes and the agent's own link notifications settle.
    await sleep(2_000);
    const before = new Map((await links(dc, ns)).map((l) => [l.ifname, l.ifindex]));
    const monitor = await LinkMonitor.start(dc, ns);
    await quiesce('restart', ns);

    const stopStarted = now();
    const status = await first.stop('SIGTERM');
    r.stopMs = now() - stopStarted;
    r.stopCode = status.code;
    const started = now();
    const second = await startAgent(dc, 'rs', ['--log-level', String(args.logLevel)]);
    r.readyMs = (await waitReadyAt(second, 120_000)) - started;
    const startLog = logTime(second, 'vxnetd starting');
    if (startLog !== undefined) r.nodeStartMs = startLog - started;
    log(`restart: stopped in ${fmt.s(r.stopMs)} s (exit ${status.code ?? status.signal}), ready again in ${fmt.s(r.readyMs)} s`);

    const { body } = await scrape(`${second.metricsUrl}/metrics`);
    r.requests = netlinkRequests(body);
    r.mutating = r.requests.create! + r.requests.change! + r.requests.delete!;
    await sleep(1_000);
    monitor.stop();
    r.monitorOverflow = monitor.overflowed;
    const touched = monitor.lines.filter((l) => managed.has(l.name));
    r.events = touched.length;
    r.eventSample = touched.slice(0, 5).map((l) => `${l.deleted ? 'del ' : ''}${l.name} <${l.flags.join(',')}>${l.master ? ` master ${l.master}` : ''}`);
    const after = new Map((await links(dc, ns)).map((l) => [l.ifname, l.ifindex]));
    r.ifindexChanged = [...managed].filter((name) => before.get(name) !== after.get(name)).length;
    await assertConverged(dc, ns, nets, 'after restart');

    for (let i = 0; i < args.scrapes + 3; i++) {
      const s = await scrape(`${second.metricsUrl}/metrics`);
      if (i < 3) continue; // warm-up
      r.scrapeMs.push(s.ms);
      r.scrapeBytes = s.body.length;
      r.scrapeDevices = s.body.split('\n').filter((l) => l.startsWith('vxnetd_network_info{')).length;
    }
  });

  const m = machine();
  console.log(`\n## Restart over ${N} converged networks (${2 * N} devices${args.fillChunk ? `, filled ${args.fillChunk} at a time` : ''}) — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}\n`);
  const rows: Array<Array<string | number>> = [
    ['SIGTERM → old agent exited', fmt.s(r.stopMs), `exit code ${r.stopCode}`],
    ['new agent spawn → /readyz 200', fmt.s(r.readyMs), r.nodeStartMs !== undefined ? `of which Node start-up ${fmt.s(r.nodeStartMs)} s` : ''],
    ['mutating netlink requests (create+change+delete)', r.mutating, `non-mutating: get ${r.requests.get}, dump ${r.requests.dump}`],
    ['link notifications for managed devices (stop+start)', r.events, r.monitorOverflow ? 'ip monitor LOST notifications: count is a lower bound' : r.eventSample.join('; ')],
    ['managed devices whose ifindex changed', r.ifindexChanged, ''],
  ];
  if (r.scrapeMs.length) {
    rows.push([
      `GET /metrics of the agent, p50 / p95 (${r.scrapeMs.length} scrapes)`,
      `${fmt.ms(percentile(r.scrapeMs, 50))} / ${fmt.ms(percentile(r.scrapeMs, 95))} ms`,
      `${r.scrapeDevices} devices, ${(r.scrapeBytes / 1024).toFixed(0)} KiB`,
    ]);
  }
  console.log(table(['what', 'value', 'notes'], rows));
  const zero = r.mutating === 0 && r.events === 0 && r.ifindexChanged === 0;
  console.log(`\ntarget: no mutating request, ready in under 2 s: ${r.mutating} requests, ${r.events} notifications, ${fmt.s(r.readyMs)} s → ${zero && r.readyMs < 2_000 ? 'met' : 'NOT met'}`);
  record('restart', { ...r, scrapeP50: percentile(r.scrapeMs, 50), scrapeP95: percentile(r.scrapeMs, 95) });
});
