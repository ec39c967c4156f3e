/**
 * Event latency: etcd put → both devices up, at a steady rate of puts.
 *
 *   sudo npx tsx bench/latency.ts [--rate 100] [--seconds 10] [--base 200]
 *
 * The agent runs and has converged on --base networks. Then new networks are
 * put one key at a time (one etcd Put each, not awaited, on a fixed
 * schedule: put i is issued at start + i/rate) for --seconds. A network
 * counts as up when `ip -ts -o monitor link` in the agent's namespace has
 * shown its bridge UP and its vxlan UP with the bridge as master; latency =
 * that (ip's time stamp, wall clock) − the moment the bench issued the put
 * (same clock). The etcd put's own round trip is shown for reference.
 */
import { writeFileSync } from 'node:fs';
import {
  assertConverged,
  cpuSeconds,
  fmt,
  foreignActivity,
  LinkMonitor,
  log,
  netlinkRequests,
  machine,
  main,
  networks,
  now,
  parseArgs,
  percentile,
  putNetworks,
  quiesce,
  record,
  scrape,
  sleep,
  startAgent,
  table,
  UpTracker,
  waitReadyAt,
  whileAlive,
  withDataCentre,
} from './lib.js';

const args = parseArgs('sudo npx tsx bench/latency.ts --rate 100 --seconds 10', {
  rate: { default: 100, help: 'puts per second' },
  seconds: { default: 10, help: 'how long to keep putting' },
  base: { default: 200, help: 'networks the agent has converged on before the puts start' },
  logLevel: { default: 'info', help: "the agent's --log-level" },
});

main(async () => {
  const count = Math.round(args.rate * args.seconds);
  const base = networks(args.base);
  const fresh = networks(count, args.base + 1);
  const foreign = foreignActivity();
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);
  const putAt = new Map<string, number>();
  const ackMs: number[] = [];
  let latencies: number[] = [];
  let cpuS = 0;
  let requests: Record<string, number> = {};
  let lateSchedule = 0;

  await withDataCentre(['lat'], async (dc) => {
    const ns = dc.host('lat').ns;
    if (base.length) await putNetworks(dc, base);
    const agent = await startAgent(dc, 'lat', ['--log-level', String(args.logLevel)]);
    await waitReadyAt(agent, 120_000);
    await assertConverged(dc, ns, base, 'base networks');
    log(`agent ready on ${base.length} networks; putting ${count} more at ${args.rate}/s`);

    const monitor = await LinkMonitor.start(dc, ns);
    const tracker = new UpTracker(fresh);
    monitor.onLine(tracker.feed);
    await quiesce('latency', ns);

    const etcd = await dc.etcd();
    const countRequests = async () => netlinkRequests((await scrape(`${agent.metricsUrl}/metrics`)).body);
    const requestsBefore = await countRequests();
    const cpuBefore = cpuSeconds(agent.pid);
    const start = now() + 20;
    const puts: Array<Promise<void>> = [];
    for (const [i, net] of fresh.entries()) {
      const due = start + (i * 1000) / args.rate;
      const wait = due - now();
      if (wait > 1) await sleep(wait - 1);
      while (now() < due) {
        // spin the last millisecond: timers are coarse
      }
      if (now() - due > 2) lateSchedule++;
      const issued = now();
      putAt.set(net.hex, issued);
      puts.push(
        etcd
          .put(`${dc.prefix}/networks/${net.hex}`)
          .value('{}')
          .exec()
          .then(() => void ackMs.push(now() - issued)),
      );
    }
    await Promise.all(puts);
    try {
      await whileAlive(agent, tracker.waitFor(count, 60_000));
    } catch (error) {
      if (monitor.overflowed) throw new Error(`ip monitor lost notifications (${monitor.errors}): latencies unknown; rerun`);
      throw error;
    }
    cpuS = cpuSeconds(agent.pid) - cpuBefore;
    // Let the agent finish what the last notifications trigger, then count its requests.
    await sleep(1_000);
    const requestsAfter = await countRequests();
    // The two scrapes' own dumps are not the agent's work.
    requests = Object.fromEntries(Object.entries(requestsAfter).map(([op, n]) => [op, n - requestsBefore[op]! - (op === 'dump' ? 1 : 0)]));
    monitor.stop();
    await assertConverged(dc, ns, [...base, ...fresh], 'all networks');
    latencies = fresh.map((net) => tracker.bothUp.get(net.hex)! - putAt.get(net.hex)!);
    // To see what the agent did during the run (resyncs, bulk applies): its log as JSON lines.
    const keepLog = process.env.VXNETD_BENCH_AGENT_LOG;
    if (keepLog) writeFileSync(keepLog, agent.logs().map((line) => JSON.stringify(line)).join('\n') + '\n');
  });

  const row = (what: string, v: number[]) => [what, v.length, fmt.ms(percentile(v, 50)), fmt.ms(percentile(v, 95)), fmt.ms(percentile(v, 99)), fmt.ms(Math.max(...v))];
  const m = machine();
  console.log(`\n## Event latency: etcd put → both devices up, ${args.rate} puts/s for ${args.seconds} s over ${args.base} converged networks — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}\n`);
  console.log(
    table(
      ['what', 'n', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms'],
      [row('put issued → bridge and vxlan up (ip monitor)', latencies), row('  of which: etcd put round trip', ackMs)],
    ),
  );
  const p99 = percentile(latencies, 99);
  const perNet = (op: string) => ((requests[op] ?? 0) / count).toFixed(2);
  console.log(
    `\nnetlink requests per new network: create ${perNet('create')}, change ${perNet('change')}, get ${perNet('get')}, delete ${perNet('delete')} (dumps during the run: ${requests.dump ?? 0})`,
  );
  console.log(`agent CPU during the puts: ${cpuS.toFixed(2)} s (${((100 * cpuS) / args.seconds).toFixed(0)}% of one core)${lateSchedule ? `; ${lateSchedule} puts issued > 2 ms late` : ''}`);
  console.log(`target p99 < 50 ms: ${fmt.ms(p99)} ms → ${p99 < 50 ? 'met' : 'NOT met'}`);
  record('latency', {
    rate: args.rate,
    seconds: args.seconds,
    base: args.base,
    p50: percentile(latencies, 50),
    p95: percentile(latencies, 95),
    p99,
    max: Math.max(...latencies),
    putAckP50: percentile(ackMs, 50),
    putAckP99: percentile(ackMs, 99),
    cpuS,
    cpuMsPerNetwork: (1000 * cpuS) / count,
    requests,
    lateSchedule,
    foreign,
  });
});
