/**
 * Converge N networks from empty: vxnetd against `ip -batch` and against one
 * `ip` process per operation, in equally fresh namespaces of one run.
 *
 *   sudo npx tsx bench/converge.ts --networks 1000 [--repeat 3]
 *
 * Each method runs --repeat times, each time in a fresh host namespace of
 * the same data centre (uplink veth u0, MTU 1500), interleaved
 * (ip -batch, vxnetd, vxnetd burst, ip per op, then again), each after the
 * machine is quiet (lib.ts quiesce(): CPU idle and the RTNL lock free).
 * Each namespace is deleted right after its measurement, and its teardown
 * waited for: devices left over from earlier runs slow every later netlink
 * operation on the machine down (measured: ip -batch of 1,000 networks took
 * 1.7 s, 8 s and 22 s in three successive runs when they were kept).
 * Ratios use the best (fastest) run of each method; the median is shown too.
 *
 * - ip -batch: the 6 requests per network vxnetd makes (lib.ts ipOps():
 *   bridge with MAC, no multicast snooping; its MTU, alias and addrgenmode
 *   none; up; vxlan with MAC, MTU, master, id, group, dev u0, ttl 5, dstport
 *   4789; its alias and addrgenmode none; up) in one `ip -batch` process,
 *   timed from spawn to exit.
 * - ip per op: the same lines, one `ip` process each, from a bash script run
 *   in the namespace (`ip netns exec … bash`). Above --per-op-sample
 *   networks it is estimated from a sample (see perOp(); said in the output).
 * - vxnetd, from empty: all N keys are in etcd before the agent starts; timed
 *   from spawning the agent to its "ready" log line, written when the first
 *   full reconcile finished and etcd is connected, together with systemd's
 *   READY=1 (GET /readyz is polled every 100 ms to confirm, and must agree).
 *   Until 2026-11-30 this polled /readyz every 10 ms and took the first 200:
 *   those ~300 HTTP requests cost the agent ~0.1 s of CPU while it was being
 *   timed. Then checked with `ip -d -j link show` (every bridge and vxlan up,
 *   vxlan enslaved, MTU, alias and addrgenmode right). Includes Node start-up;
 *   a breakdown is printed too.
 * - vxnetd, burst: an agent is already running and ready (no networks); the
 *   N keys are put in transactions of 128; timed from the first put to the
 *   last network seen up (bridge UP, vxlan UP with master) by
 *   `ip -ts -o monitor link` in that namespace (kernel-side time stamps; the
 *   monitor runs during this row only). The time from the last put's
 *   acknowledgement is shown too: etcd itself sometimes stalls for seconds
 *   on this kind of machine, which only the first number includes.
 * - vxnetd's kernel requests alone (--kernel-only): the agent's planner and
 *   apply code with its netlink socket code, as many networks in flight as the agent, and
 *   nothing else (bench/kernel-requests.ts); timed from the first request to
 *   the last reply. Shows how much of vxnetd's time is the kernel's and how
 *   much the agent adds (Node start-up, etcd, logging, status writes).
 */
import { NETWORKS_IN_FLIGHT } from '../src/agent/agent.js';
import {
  assertConverged,
  allowGroups,
  cpuSeconds,
  threadCpuOf,
  discardHost,
  findIp,
  fmt,
  foreignActivity,
  ipOps,
  LinkMonitor,
  log,
  logTime,
  machine,
  main,
  memory,
  netlinkRequests,
  networks,
  now,
  parseArgs,
  percentile,
  putNetworks,
  quiesce,
  record,
  REPO_ROOT,
  scrape,
  run as runCommand,
  scratchDir,
  startAgent,
  table,
  type AgentHandle,
  timedRun,
  UpTracker,
  waitReadyAt,
  whileAlive,
  withDataCentre,
  writeFile,

  type DataCentre,
} from './lib.js';

const args = parseArgs('sudo npx tsx bench/converge.ts --networks 1000', {
  networks: { default: 1000, help: 'networks to converge (2 devices each)' },
  repeat: { default: 3, help: 'runs of each method, each in a fresh namespace; ratios use the best run' },
  perOpSample: { default: 1000, help: 'above this many networks, run only this many with one ip per op and estimate (see perOp())' },
  burst: { default: true, help: 'also measure the burst case (--burst=false to skip)' },
  perOp: { default: true, help: 'also measure one ip per op (--per-op=false to skip)' },
  kernelOnly: { default: true, help: "also measure vxnetd's kernel requests alone, without the agent around them (--kernel-only=false to skip)" },
  logLevel: { default: 'info', help: "the agent's --log-level" },
});

interface AgentRun {
  ms: number;
  cpuS: number;
  rssMiB: number;
  nodeStartMs?: number;
  startToReadyMs?: number;
  putMs?: number;
  /** Burst: from the last put's acknowledgement to all up. */
  afterLastPutMs?: number;
  /** vxnetd_netlink_requests_total by op at the end of the run. */
  requests?: Record<string, number>;
  /** ip -batch of the same round, run minutes apart at most: the ratio to it cancels the machine's drift. */
  roundIpBatchMs?: number;
}

const N = args.networks;
const R = Math.max(1, Math.round(args.repeat));
const nets = networks(N);
/** Requests per network: ipOps() is written to match vxnetd's apply of a new network. */
const OPS_PER_NETWORK = ipOps(nets[0]!, 'h').length;
const dir = scratchDir('converge');
const ip = findIp();

async function ipBatch(dc: DataCentre, host: string): Promise<number> {
  const batch = writeFile(dir, `batch-${host}`, `${nets.flatMap((n) => ipOps(n, host)).join('\n')}\n`);
  await quiesce('ip -batch', dc.host(host).ns);
  const ms = await timedRun([ip, '-n', dc.host(host).ns, '-batch', batch], 'ip -batch');
  await assertConverged(dc, dc.host(host).ns, nets, 'ip -batch');
  log(`ip -batch: ${fmt.s(ms)} s`);
  return ms;
}

/**
 * One `ip` per op. When sample < N, only `sample` networks are run that way;
 * then the next `sample` networks are created with one `ip -batch` in the
 * same namespace, and the difference is the cost of a process per op. The
 * estimate for N is the ip -batch time for N plus 6·N times that cost: the
 * kernel's share per network grows with N (it is not linear), the process
 * overhead per op does not, so scaling the sample by N/sample would be wrong.
 */
async function perOp(dc: DataCentre, host: string, sample: number, ipBatchMs: number): Promise<{ ms: number; perProcessMs?: number }> {
  const ns = dc.host(host).ns;
  const lines = nets.slice(0, sample).flatMap((n) => ipOps(n, host).map((op) => `${ip} ${op}`));
  const script = writeFile(dir, `per-op-${host}.sh`, `set -e\n${lines.join('\n')}\n`);
  await quiesce('ip per op', ns);
  const ms = await timedRun([ip, 'netns', 'exec', ns, 'bash', script], 'ip per op');
  await assertConverged(dc, ns, nets.slice(0, sample), 'ip per op');
  if (sample >= N) {
    log(`ip per op: ${fmt.s(ms)} s for ${sample} networks`);
    return { ms };
  }
  const next = nets.slice(sample, 2 * sample);
  const batch = writeFile(dir, `per-op-batch-${host}`, `${next.flatMap((n) => ipOps(n, host)).join('\n')}\n`);
  await quiesce('ip -batch of the next sample', ns);
  const batchMs = await timedRun([ip, '-n', ns, '-batch', batch], 'ip -batch (per-op reference)');
  await assertConverged(dc, ns, next, 'ip -batch (per-op reference)');
  const perProcessMs = (ms - batchMs) / (OPS_PER_NETWORK * sample);
  const estimate = ipBatchMs + OPS_PER_NETWORK * N * perProcessMs;
  log(`ip per op: ${fmt.s(ms)} s for ${sample} networks, ip -batch ${fmt.s(batchMs)} s for the next ${next.length}: ${perProcessMs.toFixed(2)} ms per ip process → estimate ${fmt.s(estimate)} s for ${N}`);
  return { ms: estimate, perProcessMs };
}

interface KernelOnlyRun {
  ms: number;
  userS: number;
  systemS: number;
  roundIpBatchMs?: number;
}

async function kernelOnly(dc: DataCentre, host: string): Promise<KernelOnlyRun> {
  const ns = dc.host(host).ns;
  await quiesce("vxnetd's kernel requests alone", ns);
  const script = `${REPO_ROOT}bench/kernel-requests.ts`;
  // process.execArgv carries tsx's loader into the child.
  const output = runCommand([ip, 'netns', 'exec', ns, process.execPath, ...process.execArgv, script, host, String(nets[0]!.vni), String(N)], 'kernel requests');
  const result = JSON.parse(output.trim().split('\n').at(-1)!) as KernelOnlyRun;
  await assertConverged(dc, ns, nets, "vxnetd's kernel requests alone");
  log(`vxnetd's kernel requests alone: ${fmt.s(result.ms)} s (user ${result.userS.toFixed(2)} s, system ${result.systemS.toFixed(2)} s)`);
  return result;
}

/** The time of the agent's "ready" log line; it must come before /readyz said 200 (polledAt). */
async function readyLogged(agent: Awaited<ReturnType<typeof startAgent>>, polledAt: number): Promise<number> {
  for (let i = 0; i < 100; i++) {
    const at = logTime(agent, 'ready');
    if (at !== undefined) {
      // Both clocks are the machine's wall clock; allow for rounding to milliseconds.
      if (at > polledAt + 5) throw new Error(`the agent logged "ready" at ${at}, after /readyz already said 200 at ${polledAt}`);
      return at;
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error('the agent answered /readyz 200 but never logged "ready"');
}

async function fromEmpty(dc: DataCentre, host: string): Promise<AgentRun> {
  const prefix = `/${host}`;
  const putMs = await putNetworks(dc, nets, { prefix });
  await quiesce('vxnetd from empty', dc.host(host).ns);
  const started = now();
  const agent = await startAgent(dc, host, ['--prefix', prefix, '--log-level', String(args.logLevel)]);
  const readyAt = await readyLogged(agent, await waitReadyAt(agent, 300_000, 100));
  const run: AgentRun = { ms: readyAt - started, cpuS: cpuSeconds(agent.pid), rssMiB: memory(agent.pid).rssMiB, putMs };
  const threads = threadCpuOf(agent.pid);
  await assertConverged(dc, dc.host(host).ns, nets, 'vxnetd from empty');
  run.requests = netlinkRequests((await scrape(`${agent.metricsUrl}/metrics`)).body);
  const startLog = logTime(agent, 'vxnetd starting');
  if (startLog !== undefined) {
    run.nodeStartMs = startLog - started;
    run.startToReadyMs = readyAt - startLog;
  }
  log(`vxnetd from empty: ${fmt.s(run.ms)} s (node start ${fmt.s(run.nodeStartMs ?? NaN)} s, cpu ${run.cpuS.toFixed(2)} s, rss ${run.rssMiB.toFixed(0)} MiB)`);
  log(`  phases: ${phases(agent, started)}; main thread user ${threads.main.user.toFixed(2)} s, system ${threads.main.system.toFixed(2)} s; other threads ${threads.others.toFixed(2)} s`);
  await agent.stop();
  return run;
}

/** Where a from-empty run's time went, from the agent's log time stamps (ms after spawn). */
function phases(agent: AgentHandle, started: number): string {
  const lines = agent.logs();
  const ms = (time: number | undefined) => (time === undefined ? '?' : String(Math.round(time - started)));
  const at = (msg: string) => ms(lines.find((l) => l.msg === msg)?.time);
  const kernelOps = new Set(['createBridge', 'createVxlan', 'updateLink', 'updateVxlan', 'deleteLink']);
  const readyAt = lines.find((l) => l.msg === 'ready')?.time;
  const applies = lines.filter((l: { op?: string; time?: number }) => kernelOps.has(l.op ?? '') && (l.time ?? 0) <= (readyAt ?? Infinity));
  return [
    `starting ${at('vxnetd starting')}`,
    `etcd connected ${at('connected to etcd')}`,
    `first apply ${ms(applies[0]?.time)}`,
    `last apply ${ms(applies.at(-1)?.time)}`,
    `ready ${ms(readyAt)} ms`,
  ].join(', ');
}

async function burst(dc: DataCentre, host: string): Promise<AgentRun> {
  const prefix = `/${host}`;
  const agent = await startAgent(dc, host, ['--prefix', prefix, '--log-level', String(args.logLevel)]);
  await waitReadyAt(agent, 30_000);
  const monitor = await LinkMonitor.start(dc, dc.host(host).ns);
  const tracker = new UpTracker(nets);
  monitor.onLine(tracker.feed);
  await quiesce('vxnetd burst', dc.host(host).ns);
  const cpuBefore = cpuSeconds(agent.pid);
  let afterLastPutMs: number | undefined;
  const t0 = now();
  const putMs = await putNetworks(dc, nets, { prefix });
  const putsDone = now();
  let ms: number;
  try {
    await whileAlive(agent, tracker.waitFor(N, Math.max(60_000, N * 30)));
    ms = tracker.lastUp() - t0;
    afterLastPutMs = Math.max(0, tracker.lastUp() - putsDone);
  } catch (error) {
    if (!monitor.overflowed) throw error;
    // ip monitor lost notifications: the dump below is the judge, timed now.
    log(`ip monitor lost notifications (${monitor.errors}); timing up to a successful dump instead`);
    await assertConverged(dc, dc.host(host).ns, nets, 'vxnetd burst');
    ms = now() - t0;
  }
  const run: AgentRun = { ms, cpuS: cpuSeconds(agent.pid) - cpuBefore, rssMiB: memory(agent.pid).rssMiB, putMs, afterLastPutMs };
  monitor.stop();
  await assertConverged(dc, dc.host(host).ns, nets, 'vxnetd burst');
  log(`vxnetd burst: ${fmt.s(ms)} s (puts took ${fmt.s(putMs)} s, last put acknowledged → all up ${fmt.s(afterLastPutMs ?? NaN)} s, cpu ${run.cpuS.toFixed(2)} s)`);
  await agent.stop();
  return run;
}

/** The first line of an error, plus the agent's last words when it died (e.g. an abort message on stderr). */
function describeError(error: unknown): string {
  const text = (error as Error).message ?? String(error);
  const lines = text.split('\n');
  const died = lines.find((l) => /terminate called|what\(\)|Error:|abort/i.test(l) && l !== lines[0]);
  return `${lines[0]}${died ? ` — ${died.trim()}` : ''}`.slice(0, 300);
}

/** Runs one measurement; a failure (e.g. the agent died) is recorded and the other methods still run. */
async function attempt<T>(what: string, failures: string[], fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (error) {
    const message = describeError(error);
    log(`${what} FAILED: ${message}`);
    failures.push(message);
    return undefined;
  }
}

main(async () => {
  const sample = Math.min(N, args.perOpSample);
  log(`converge: ${N} networks (${OPS_PER_NETWORK * N} ip operations), ${R} run(s) of each method`);
  const foreign = foreignActivity();
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);

  const hosts: string[] = [];
  for (let r = 1; r <= R; r++) {
    hosts.push(`ipb${r}`, `vx${r}`, ...(args.burst ? [`burst${r}`] : []), ...(args.perOp ? [`ipop${r}`] : []), ...(args.kernelOnly ? [`kr${r}`] : []));
  }
  const batchRuns: number[] = [];
  const emptyRuns: AgentRun[] = [];
  const burstRuns: AgentRun[] = [];
  const perOpRuns: Array<{ ms: number; roundIpBatchMs: number }> = [];
  const perProcessMs: number[] = [];
  const kernelOnlyRuns: KernelOnlyRun[] = [];
  const emptyFailures: string[] = [];
  const burstFailures: string[] = [];

  await withDataCentre(hosts, async (dc) => {
    if (N > 2_000) {
      for (const host of hosts) await allowGroups(dc, host, N);
      log(`raised net.core.optmem_max in the bench namespaces for ${N} multicast groups per underlay (see lib.ts allowGroups)`);
    }
    for (let r = 1; r <= R; r++) {
      log(`run ${r} of ${R}`);
      // Each method's namespace is deleted (and its teardown waited for) before the next one runs.
      const roundIpBatchMs = await ipBatch(dc, `ipb${r}`);
      batchRuns.push(roundIpBatchMs);
      await discardHost(dc, `ipb${r}`, dc.fabricNs);
      const empty = await attempt('vxnetd from empty', emptyFailures, () => fromEmpty(dc, `vx${r}`));
      if (empty) emptyRuns.push({ ...empty, roundIpBatchMs });
      await discardHost(dc, `vx${r}`, dc.fabricNs);
      if (args.burst) {
        const b = await attempt('vxnetd burst', burstFailures, () => burst(dc, `burst${r}`));
        if (b) burstRuns.push({ ...b, roundIpBatchMs });
        await discardHost(dc, `burst${r}`, dc.fabricNs);
      }
      if (args.perOp) {
        const result = await perOp(dc, `ipop${r}`, sample, roundIpBatchMs);
        perOpRuns.push({ ms: result.ms, roundIpBatchMs });
        if (result.perProcessMs !== undefined) perProcessMs.push(result.perProcessMs);
        await discardHost(dc, `ipop${r}`, dc.fabricNs);
      }
      if (args.kernelOnly) {
        kernelOnlyRuns.push({ ...(await kernelOnly(dc, `kr${r}`)), roundIpBatchMs });
        await discardHost(dc, `kr${r}`, dc.fabricNs);
      }
    }
  });

  const best = (v: number[]) => Math.min(...v);
  const median = (v: number[]) => {
    const sorted = [...v].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const fastest = <T extends { ms: number }>(runs: T[]) => (runs.length ? runs.reduce((a, b) => (b.ms < a.ms ? b : a)) : undefined);
  const failed = (failures: string[]) => `FAILED ${failures.length} of ${R}: ${failures[0]}`;
  const ipBatchBest = best(batchRuns);
  const empty = fastest(emptyRuns);
  const burstBest = fastest(burstRuns);
  const perOpBest = fastest(perOpRuns)?.ms;
  const perRun = (runs: Array<{ ms: number; roundIpBatchMs?: number }>) => fmt.x(median(runs.map((x) => x.ms / x.roundIpBatchMs!)));
  const rows: Array<Array<string | number>> = [[`ip -batch (${OPS_PER_NETWORK} ops/network, 1 process)`, fmt.s(ipBatchBest), fmt.s(median(batchRuns)), fmt.x(1), fmt.x(1), '']];
  const agentRow = (what: string, run: AgentRun | undefined, runs: AgentRun[], failures: string[], note: (x: AgentRun) => string) =>
    rows.push(
      run
        ? [what, fmt.s(run.ms), fmt.s(median(runs.map((x) => x.ms))), fmt.x(run.ms / ipBatchBest), perRun(runs), `${note(run)}${failures.length ? `; ${failed(failures)}` : ''}`]
        : [what, '—', '—', '—', '—', failed(failures)],
    );
  agentRow('vxnetd: keys in etcd, agent start → ready', empty, emptyRuns, emptyFailures, (x) =>
    `of which Node start-up ${fmt.s(x.nodeStartMs ?? NaN)} s; cpu ${x.cpuS.toFixed(1)} s; rss ${x.rssMiB.toFixed(0)} MiB; netlink requests ${Object.entries(x.requests ?? {}).map(([op, n]) => `${op} ${n}`).join(', ')}`,
  );
  if (args.burst) {
    agentRow('vxnetd: agent running, burst of puts → all up', burstBest, burstRuns, burstFailures, (x) =>
      `puts took ${fmt.s(x.putMs!)} s${x.putMs! > 1_000 ? ' (etcd was slow: the time says more about etcd than vxnetd)' : ''}, last put acknowledged → all up ${fmt.s(x.afterLastPutMs ?? NaN)} s; agent cpu ${x.cpuS.toFixed(1)} s`,
    );
  }
  const kernelOnlyBest = fastest(kernelOnlyRuns);
  if (kernelOnlyBest) {
    rows.push([
      "vxnetd's kernel requests alone (no etcd, logging, start-up)",
      fmt.s(kernelOnlyBest.ms),
      fmt.s(median(kernelOnlyRuns.map((x) => x.ms))),
      fmt.x(kernelOnlyBest.ms / ipBatchBest),
      perRun(kernelOnlyRuns),
      `the agent's planner, apply and netlink code, ${NETWORKS_IN_FLIGHT} networks in flight; cpu user ${kernelOnlyBest.userS.toFixed(1)} s, system ${kernelOnlyBest.systemS.toFixed(1)} s`,
    ]);
  }
  if (perOpBest !== undefined) {
    rows.push([
      'one ip process per op',
      fmt.s(perOpBest),
      fmt.s(median(perOpRuns.map((x) => x.ms))),
      fmt.x(perOpBest / ipBatchBest),
      perRun(perOpRuns),
      sample < N ? `estimate: ip -batch + ${OPS_PER_NETWORK * N} × ${percentile(perProcessMs, 50).toFixed(2)} ms per ip process (measured on ${sample} networks)` : '',
    ]);
  }

  const m = machine();
  console.log(`\n## Converge ${N} networks (${2 * N} devices), best of ${R} — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}\n`);
  console.log(table(['what', 'best s', 'median s', '÷ ip -batch (best)', '÷ same run\'s ip -batch (median)', 'notes'], rows));
  const batchRatio = empty ? empty.ms / ipBatchBest : undefined;
  const perOpRatio = empty && perOpBest !== undefined ? perOpBest / empty.ms : undefined;
  console.log(`\ntarget vxnetd ≤ 1.5× ip -batch: ${batchRatio === undefined ? 'no successful run → NOT met' : `${fmt.x(batchRatio)} → ${batchRatio <= 1.5 ? 'met' : 'NOT met'} (median of each run's ratio to its own round's ip -batch: ${perRun(emptyRuns)})`}`);
  if (perOpBest !== undefined) {
    console.log(`target one-ip-per-op ≥ 5× slower than vxnetd: ${perOpRatio === undefined ? 'no successful vxnetd run → NOT met' : `${fmt.x(perOpRatio)} → ${perOpRatio >= 5 ? 'met' : 'NOT met'}`}`);
  }
  if (burstBest) {
    console.log(`burst case: ${fmt.x(burstBest.ms / ipBatchBest)} of ip -batch${perOpBest ? `; one-ip-per-op ÷ burst ${fmt.x(perOpBest / burstBest.ms)}` : ''}`);
  }
  record('converge', {
    networks: N,
    repeat: R,
    perOpSample: sample,
    perProcessMs,
    ipBatchMs: batchRuns,
    fromEmpty: emptyRuns,
    fromEmptyFailures: emptyFailures,
    burst: burstRuns,
    burstFailures,
    perOpMs: perOpRuns.map((x) => x.ms),
    kernelOnly: kernelOnlyRuns,
    ratioBatch: batchRatio,
    ratioPerOp: perOpRatio,
    burstRatioBatch: burstBest ? burstBest.ms / ipBatchBest : undefined,
    foreign,
  });
  if (emptyFailures.length || burstFailures.length) process.exitCode = 1;
});
