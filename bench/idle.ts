/**
 * Idle CPU and memory of a converged agent.
 *
 *   sudo npx tsx bench/idle.ts [--networks 2000] [--idle-seconds 60]
 *
 * N networks in etcd, agent started and converged (checked with a dump),
 * --settle seconds for status writes and notifications to drain; then the
 * agent's utime+stime (/proc/<pid>/stat) over --idle-seconds, nothing else
 * happening. VmRSS and VmHWM (peak, i.e. during convergence) from
 * /proc/<pid>/status at the end. What the agent did meanwhile (netlink
 * requests from /metrics, scraped just before and after the window, log
 * lines) is shown: the periodic full resync (default every 60 s) may fall
 * into the window, and is part of idle.
 */
import {
  cpuTimesOf,
  foreignActivity,
  log,
  machine,
  main,
  memory,
  netlinkRequests,
  networks,
  now,
  parseArgs,
  record,
  scrape,
  sleep,
  startConverged,
  table,
  withDataCentre,
} from './lib.js';

const args = parseArgs('sudo npx tsx bench/idle.ts --networks 2000 --idle-seconds 60', {
  networks: { default: 2000, help: 'converged networks' },
  idleSeconds: { default: 60, help: 'length of the idle window' },
  settle: { default: 5, help: 'seconds between convergence and the idle window' },
  logLevel: { default: 'info', help: "the agent's --log-level" },
  fillChunk: { default: 0, help: '0: all keys in etcd before the agent starts; K: put them K at a time into the running agent' },
  resyncInterval: { default: '', help: "the agent's --resync-interval (default: the agent's own, 60s), e.g. 1h to see idle without the periodic resync" },
});

main(async () => {
  const N = args.networks;
  const foreign = foreignActivity();
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);
  const r = {
    networks: N,
    fillChunk: args.fillChunk,
    resyncInterval: args.resyncInterval || '60s (default)',
    idleSeconds: args.idleSeconds,
    cpuS: 0,
    userS: 0,
    systemS: 0,
    cpuPercent: 0,
    rssMiB: 0,
    hwmMiB: 0,
    requests: {} as Record<string, number>,
    logLines: 0,
    logSample: [] as string[],
    foreign,
  };

  await withDataCentre(['idle'], async (dc) => {
    const agentArgs = ['--log-level', String(args.logLevel), ...(args.resyncInterval ? ['--resync-interval', String(args.resyncInterval)] : [])];
    const agent = await startConverged(dc, 'idle', networks(N), { chunk: args.fillChunk, agentArgs });
    log(`converged on ${N} networks; settling ${args.settle} s, then idle for ${args.idleSeconds} s`);
    await sleep(args.settle * 1_000);
    const before = netlinkRequests((await scrape(`${agent.metricsUrl}/metrics`)).body);
    await sleep(200);
    const logsBefore = agent.logs().length;
    const cpu0 = cpuTimesOf(agent.pid);
    const t0 = now();
    await sleep(args.idleSeconds * 1_000);
    const cpu1 = cpuTimesOf(agent.pid);
    const elapsed = (now() - t0) / 1000;
    const logs = agent.logs().slice(logsBefore);
    const mem = memory(agent.pid);
    const after = netlinkRequests((await scrape(`${agent.metricsUrl}/metrics`)).body);
    r.userS = cpu1.user - cpu0.user;
    r.systemS = cpu1.system - cpu0.system;
    r.cpuS = r.userS + r.systemS;
    r.cpuPercent = (100 * r.cpuS) / elapsed;
    r.rssMiB = mem.rssMiB;
    r.hwmMiB = mem.hwmMiB;
    // The scrape itself counts one dump.
    r.requests = Object.fromEntries(Object.entries(after).map(([op, n]) => [op, n - before[op]! - (op === 'dump' ? 1 : 0)]));
    r.logLines = logs.length;
    r.logSample = logs.slice(0, 3).map((l) => (l.raw ?? l.msg ?? JSON.stringify(l)) as string);
  });

  const m = machine();
  console.log(`\n## Idle agent over ${N} converged networks (${2 * N} devices${args.fillChunk ? `, filled ${args.fillChunk} at a time` : ''}${args.resyncInterval ? `, --resync-interval ${args.resyncInterval}` : ''}) — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}\n`);
  const req = r.requests;
  console.log(
    table(
      ['what', 'value', 'notes'],
      [
        [`CPU over ${args.idleSeconds} s idle`, `${r.cpuS.toFixed(2)} s = ${r.cpuPercent.toFixed(2)}%`, `% of one core; user ${r.userS.toFixed(2)} s, system ${r.systemS.toFixed(2)} s`],
        ['netlink requests meanwhile', Object.values(req).reduce((a, b) => a + b, 0), `dump ${req.dump}, get ${req.get}, create ${req.create}, change ${req.change}, delete ${req.delete}`],
        ['log lines meanwhile', r.logLines, r.logSample.join(' | ').slice(0, 120)],
        ['VmRSS at the end', `${r.rssMiB.toFixed(0)} MiB`, ''],
        ['VmHWM (peak RSS)', `${r.hwmMiB.toFixed(0)} MiB`, 'reached while converging'],
      ],
    ),
  );
  console.log(`\ntarget idle CPU ~0 and RSS < 150 MB: ${r.cpuPercent.toFixed(2)}% and ${((r.rssMiB * 2 ** 20) / 1e6).toFixed(0)} MB → ${r.cpuPercent < 1 && r.rssMiB * 2 ** 20 < 150e6 ? 'met' : 'NOT met'} (CPU counted as ~0 below 1% of one core)`);
  record('idle', r);
});
