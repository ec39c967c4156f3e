/**
 * Unicast flood entries for 1,000 networks × 20 peers (DESIGN.md §7: within 1.5× of `bridge
 * -batch` doing the same), vxnetd against `bridge -batch` and against one `bridge` process per
 * entry, in equally fresh namespaces of one run.
 *
 *   sudo npx tsx bench/flood-entries.ts [--networks 1000] [--peers 20] [--repeat 2]
 *
 * Each method runs --repeat times, interleaved, each in a fresh host namespace that is deleted
 * (and its teardown waited for) right after it is measured, each after the machine is quiet
 * (lib.ts quiesce()). The peers do not exist: their members keys (`<prefix>/members/<hex>/<peer>`
 * = `{"address":"fd00:beef::<k>"}`) are written straight into etcd, as their agents would.
 *
 * Entries alone (the devices exist already):
 * - vxnetd: the agent (`--flood unicast --scope all`) has started over the N networks and is
 *   ready (devices up, no peers, no entries). Then the N × P members keys are put, peer by peer
 *   (each peer's N keys in transactions of 128, as an agent publishes its own), one transaction
 *   after the other. Timed from the first put until the agent has appended the last entry: the
 *   pino time of the log line (`appendFloodEntries`, one per network reconcile) with its N × P-th entry, written after the kernel acknowledged
 *   that entry. Then one `bridge -j fdb show` checks that every vxlan has exactly the P all-zeros
 *   permanent entries.
 * - vxnetd, restart (--restart, on by default): the agent made the devices (no peers) and was
 *   stopped; the members keys are put while it is down; a new agent starts over those devices
 *   and appends the entries in its first full round. Spawn → `ready` log line (Node start-up
 *   included and shown apart): the agent's own pace at the entries, without the watch delivery
 *   of 157 transactions in the way.
 * - bridge -batch: the same N device pairs made by one untimed `ip -batch` (the 6 requests per
 *   network of lib.ts ipOps(), the vxlan with `remote ::` in place of a group: an IPv6 vxlan
 *   without a default destination, what vxnetd makes in unicast mode); then one `bridge -batch`
 *   of N × P `fdb append 00:00:00:00:00:00 dev vxlan<hex> dst <peer> self permanent` lines, in the
 *   same order as the agent's puts, timed from spawn to exit.
 * - one bridge per entry: the same lines, one `bridge` process each, from a bash script run in the
 *   namespace. Above --per-op-sample entries only the sample runs that way: then the next sample
 *   is added by one `bridge -batch` in the same namespace, the difference is the cost of one
 *   process, and the estimate is the bridge -batch time for N × P plus N × P times that cost.
 *
 * From empty (--from-empty, on by default): the N networks and the N × P members keys are in
 * etcd before the agent starts; spawn → `ready` log line, and how many entries were in place by
 * then; against one `ip -batch` of the devices followed by one `bridge -batch` of the entries
 * (timed together, spawn of the first to exit of the second).
 */
import {
  assertConverged,
  cpuSeconds,
  discardHost,
  findIp,
  fmt,
  foreignActivity,
  ipOps,
  log,
  logTime,
  machine,
  main,
  memory,
  networks,
  now,
  parseArgs,
  percentile,
  putNetworks,
  quiesce,
  record,
  scrape,
  scratchDir,
  sleep,
  startAgent,
  table,
  tail,
  timedRun,
  waitReadyAt,
  whileAlive,
  withDataCentre,
  writeFile,
  type AgentHandle,
  type BenchNetwork,
  type DataCentre,
} from './lib.js';
import { loadavg } from 'node:os';
import { parseSamples, sumSamples } from '../native-tests/harness/observe.js';

const args = parseArgs('sudo npx tsx bench/flood-entries.ts --networks 1000 --peers 20', {
  networks: { default: 1000, help: 'networks (device pairs)' },
  peers: { default: 20, help: 'other hosts per network, i.e. all-zeros entries per vxlan' },
  repeat: { default: 2, help: 'runs of each method, each in a fresh namespace; ratios use the best run' },
  perOpSample: { default: 2000, help: 'entries added with one bridge process each; above it the rest is estimated (0: all)' },
  perOp: { default: true, help: 'also measure one bridge process per entry (--per-op=false to skip)' },
  restart: { default: true, help: 'also measure an agent started over the existing devices with the members keys already in etcd (entries from the list, no watch)' },
  fromEmpty: { default: true, help: 'also measure from empty: devices and entries, agent start → ready vs ip -batch + bridge -batch' },
  order: { default: 'peer', help: "order of the puts and batch lines: 'peer' (each peer's keys together, as agents publish) or 'network' (each network's peers together)" },
  logLevel: { default: 'info', help: "the agent's --log-level (info or debug: the bench counts its appendFloodEntries lines)" },
  quietWait: { default: 30, help: 'seconds to wait at most for a quiet machine (CPU ≥ 90 % idle, RTNL free) before each timed step and after each teardown' },
});
const QUIET = { maxMs: args.quietWait * 1_000 };

const N = args.networks;
const P = args.peers;
const R = Math.max(1, Math.round(args.repeat));
const TOTAL = N * P;
const nets = networks(N);
const peers = Array.from({ length: P }, (_, k) => ({ host: `p${String(k + 1).padStart(2, '0')}`, address: `fd00:beef::${(k + 1).toString(16)}` }));
const dir = scratchDir('flood');
const ip = findIp();
const bridgeBin = ip.replace(/ip$/, 'bridge');
if (args.order !== 'peer' && args.order !== 'network') throw new Error(`--order must be peer or network, not ${args.order}`);

/** Every (network, peer) pair in the order of the puts and of the batch lines. */
const pairs: Array<{ net: BenchNetwork; peer: (typeof peers)[number] }> =
  args.order === 'peer' ? peers.flatMap((peer) => nets.map((net) => ({ net, peer }))) : nets.flatMap((net) => peers.map((peer) => ({ net, peer })));

const fdbLine = ({ net, peer }: (typeof pairs)[number]) => `fdb append 00:00:00:00:00:00 dev ${net.vxlan} dst ${peer.address} self permanent`;

/** lib.ts ipOps() for vxnetd's unicast vxlan: no group, but an IPv6 socket (`remote ::`), as the agent makes it. */
function unicastIpOps(net: BenchNetwork, host: string): string[] {
  return ipOps(net, host).map((op) => op.replace(` group ${net.group} `, ' remote :: '));
}

async function makeDevices(dc: DataCentre, host: string): Promise<number> {
  const file = writeFile(dir, `devices-${host}`, `${nets.flatMap((n) => unicastIpOps(n, host)).join('\n')}\n`);
  const ms = await timedRun([ip, '-n', dc.host(host).ns, '-batch', file], 'ip -batch (devices)');
  await assertConverged(dc, dc.host(host).ns, nets, 'ip -batch (devices)');
  return ms;
}

/** All-zeros permanent entries per vxlan of `nets`, from one dump; throws unless each has exactly the P peers. */
async function assertEntries(dc: DataCentre, host: string, what: string): Promise<void> {
  const result = await dc.exec(dc.host(host).ns, [bridgeBin, '-j', 'fdb', 'show'], { timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`${what}: bridge fdb show failed: ${result.stderr}`);
  const entries = JSON.parse(result.stdout || '[]') as Array<{ mac: string; ifname?: string; dst?: string; flags?: string[]; state?: string }>;
  const byDevice = new Map<string, Set<string>>();
  for (const e of entries) {
    if (e.mac !== '00:00:00:00:00:00' || !e.flags?.includes('self') || e.state !== 'permanent' || !e.ifname) continue;
    let set = byDevice.get(e.ifname);
    if (!set) byDevice.set(e.ifname, (set = new Set()));
    set.add(e.dst ?? '-');
  }
  const wanted = peers.map((p) => p.address).sort().join(',');
  const wrong = nets.filter((n) => [...(byDevice.get(n.vxlan) ?? [])].sort().join(',') !== wanted);
  if (wrong.length) {
    const first = wrong[0]!;
    throw new Error(`${what}: ${wrong.length} of ${N} vxlans do not flood to exactly the ${P} peers (first: ${first.vxlan} → ${[...(byDevice.get(first.vxlan) ?? [])].join(' ') || 'nothing'})`);
  }
}

/** Puts every members key, peer by peer (or network by network), in transactions of 128, one after the other. */
async function putMembers(dc: DataCentre, prefix: string): Promise<number> {
  const etcd = await dc.etcd();
  const started = now();
  for (let i = 0; i < pairs.length; i += 128) {
    const chunk = pairs.slice(i, i + 128);
    await etcd.kv.txn({
      success: chunk.map(({ net, peer }) => ({
        request_put: { key: Buffer.from(`${prefix}/members/${net.hex}/${peer.host}`), value: Buffer.from(JSON.stringify({ address: peer.address })) },
      })),
    });
  }
  return now() - started;
}

/** One line per network reconcile (op appendFloodEntries, `entries` appended), each entry repeated so that counting entries counts lines. */
function appendLines(agent: AgentHandle): Array<{ time: number }> {
  return agent.logs().flatMap((l) => (l.op === 'appendFloodEntries' ? Array.from({ length: Number(l.entries) }, () => l) : []));
}

async function waitForAppends(agent: AgentHandle, count: number, timeoutMs: number): Promise<number> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const lines = appendLines(agent);
    if (lines.length >= count) return Math.max(...lines.map((l) => l.time));
    if (now() > deadline) throw new Error(`the agent appended ${lines.length} of ${count} flood entries within ${timeoutMs} ms\n${tail(agent)}`);
    await sleep(250);
  }
}

function requestCounts(body: string): Record<string, number> {
  const samples = parseSamples(body);
  const ops = ['neigh_add', 'neigh_del', 'neigh_dump', 'create', 'change', 'delete', 'dump'];
  return Object.fromEntries(ops.map((op) => [op, sumSamples(samples, 'vxnetd_netlink_requests_total', { op })]));
}

interface AgentEntriesRun {
  ms: number;
  putMs: number;
  afterLastPutMs: number;
  cpuS: number;
  rssMiB: number;
  readyMs: number;
  requests: Record<string, number>;
  logLines: number;
  roundBatchMs?: number;
}

async function agentEntries(dc: DataCentre, host: string): Promise<AgentEntriesRun> {
  const prefix = `/${host}`;
  await putNetworks(dc, nets, { prefix });
  const ns = dc.host(host).ns;
  await quiesce('vxnetd start (devices)', ns, QUIET);
  const spawned = now();
  const agent = await startAgent(dc, host, ['--prefix', prefix, '--flood', 'unicast', '--scope', 'all', '--log-level', String(args.logLevel)]);
  const readyMs = (await waitReadyAt(agent, 300_000, 100)) - spawned;
  await assertConverged(dc, ns, nets, 'vxnetd unicast devices');
  log(`vxnetd ready over ${N} networks (no peers yet) after ${fmt.s(readyMs)} s`);
  // Its own members keys and statuses are written by now (ready comes after the first round); let them settle.
  await sleep(2_000);
  await quiesce('vxnetd flood entries', ns, QUIET);
  const linesBefore = agent.logs().length;
  const cpuBefore = cpuSeconds(agent.pid);
  const t0 = now();
  const putMs = await putMembers(dc, prefix);
  const putsDone = t0 + putMs;
  const lastAppend = await whileAlive(agent, waitForAppends(agent, TOTAL, Math.max(120_000, TOTAL * 20)));
  const run: AgentEntriesRun = {
    ms: lastAppend - t0,
    putMs,
    afterLastPutMs: Math.max(0, lastAppend - putsDone),
    cpuS: cpuSeconds(agent.pid) - cpuBefore,
    rssMiB: memory(agent.pid).rssMiB,
    readyMs,
    requests: {},
    logLines: agent.logs().length - linesBefore,
  };
  await assertEntries(dc, host, 'vxnetd flood entries');
  run.requests = requestCounts((await scrape(`${agent.metricsUrl}/metrics`)).body);
  log(
    `vxnetd entries: ${fmt.s(run.ms)} s (puts ${fmt.s(putMs)} s, last put acknowledged → last entry ${fmt.s(run.afterLastPutMs)} s, cpu ${run.cpuS.toFixed(2)} s, rss ${run.rssMiB.toFixed(0)} MiB, ${run.logLines} log lines; requests ${JSON.stringify(run.requests)})`,
  );
  await agent.stop();
  return run;
}

/**
 * Entries alone, read from etcd at start: the agent made the devices (no peers) and was stopped;
 * the members keys are put while it is down; a new agent starts over the existing devices (it
 * adopts them: no link change) and appends the N × P entries in its first full round. Timed from
 * spawn to the `ready` log line (Node start-up included, shown apart): no etcd watch delivery in
 * the way, the agent's own speed at the entries.
 */
async function agentRestartEntries(dc: DataCentre, host: string): Promise<AgentEntriesRun & { nodeStartMs: number; entriesAtReady: number }> {
  const prefix = `/${host}`;
  await putNetworks(dc, nets, { prefix });
  const ns = dc.host(host).ns;
  const agentArgs = ['--prefix', prefix, '--flood', 'unicast', '--scope', 'all', '--log-level', String(args.logLevel)];
  const first = await startAgent(dc, host, agentArgs);
  await waitReadyAt(first, 300_000, 100);
  await assertConverged(dc, ns, nets, 'vxnetd unicast devices');
  await sleep(2_000);
  await first.stop();
  const putMs = await putMembers(dc, prefix);
  await quiesce('vxnetd restart (entries)', ns, QUIET);
  const spawned = now();
  const agent = await startAgent(dc, host, agentArgs);
  await waitReadyAt(agent, 300_000, 100);
  const readyAt = logTime(agent, 'ready');
  if (readyAt === undefined) throw new Error('ready on /readyz but no "ready" log line');
  const entriesAtReady = appendLines(agent).filter((l) => l.time <= readyAt).length;
  const lastAppend = entriesAtReady < TOTAL ? await whileAlive(agent, waitForAppends(agent, TOTAL, 300_000)) : readyAt;
  const run = {
    ms: Math.max(readyAt, lastAppend) - spawned,
    putMs,
    afterLastPutMs: 0,
    cpuS: cpuSeconds(agent.pid),
    rssMiB: memory(agent.pid).rssMiB,
    readyMs: readyAt - spawned,
    requests: {} as Record<string, number>,
    logLines: agent.logs().length,
    nodeStartMs: (logTime(agent, 'vxnetd starting') ?? NaN) - spawned,
    entriesAtReady,
  };
  await assertEntries(dc, host, 'vxnetd restart');
  run.requests = requestCounts((await scrape(`${agent.metricsUrl}/metrics`)).body);
  log(`vxnetd restart over the devices, members in etcd: ${fmt.s(run.ms)} s to ready with ${entriesAtReady} of ${TOTAL} entries (Node start-up ${fmt.s(run.nodeStartMs)} s, cpu ${run.cpuS.toFixed(2)} s, rss ${run.rssMiB.toFixed(0)} MiB; requests ${JSON.stringify(run.requests)})`);
  await agent.stop();
  return run;
}

async function bridgeBatch(dc: DataCentre, host: string): Promise<number> {
  await makeDevices(dc, host);
  const file = writeFile(dir, `fdb-${host}`, `${pairs.map(fdbLine).join('\n')}\n`);
  await quiesce('bridge -batch', dc.host(host).ns, QUIET);
  const ms = await timedRun([bridgeBin, '-n', dc.host(host).ns, '-batch', file], 'bridge -batch');
  await assertEntries(dc, host, 'bridge -batch');
  log(`bridge -batch: ${fmt.s(ms)} s for ${TOTAL} entries`);
  return ms;
}

async function perOp(dc: DataCentre, host: string, batchMs: number): Promise<{ ms: number; perProcessMs?: number }> {
  const ns = dc.host(host).ns;
  await makeDevices(dc, host);
  const sample = args.perOpSample > 0 ? Math.min(TOTAL, args.perOpSample) : TOTAL;
  const script = writeFile(dir, `per-op-${host}.sh`, `set -e\n${pairs.slice(0, sample).map((p) => `${bridgeBin} ${fdbLine(p)}`).join('\n')}\n`);
  await quiesce('bridge per entry', ns, QUIET);
  const ms = await timedRun([ip, 'netns', 'exec', ns, 'bash', script], 'bridge per entry');
  if (sample >= TOTAL) {
    await assertEntries(dc, host, 'bridge per entry');
    log(`one bridge per entry: ${fmt.s(ms)} s for ${TOTAL} entries`);
    return { ms };
  }
  const next = pairs.slice(sample, 2 * sample);
  const file = writeFile(dir, `per-op-batch-${host}`, `${next.map(fdbLine).join('\n')}\n`);
  await quiesce('bridge -batch of the next sample', ns, QUIET);
  const nextMs = await timedRun([bridgeBin, '-n', ns, '-batch', file], 'bridge -batch (per-entry reference)');
  const perProcessMs = (ms - nextMs) / sample;
  const estimate = batchMs + TOTAL * perProcessMs;
  log(`one bridge per entry: ${fmt.s(ms)} s for ${sample} entries, bridge -batch ${fmt.s(nextMs)} s for the next ${next.length}: ${perProcessMs.toFixed(2)} ms per bridge process → estimate ${fmt.s(estimate)} s for ${TOTAL}`);
  return { ms: estimate, perProcessMs };
}

interface FromEmptyRun {
  ms: number;
  entriesAtReady: number;
  cpuS: number;
  rssMiB: number;
  requests: Record<string, number>;
  roundMs?: number;
}

async function agentFromEmpty(dc: DataCentre, host: string): Promise<FromEmptyRun> {
  const prefix = `/${host}`;
  await putNetworks(dc, nets, { prefix });
  await putMembers(dc, prefix);
  const ns = dc.host(host).ns;
  await quiesce('vxnetd from empty (devices and entries)', ns, QUIET);
  const spawned = now();
  const agent = await startAgent(dc, host, ['--prefix', prefix, '--flood', 'unicast', '--scope', 'all', '--log-level', String(args.logLevel)]);
  await waitReadyAt(agent, 600_000, 100);
  const readyAt = logTime(agent, 'ready');
  if (readyAt === undefined) throw new Error('ready on /readyz but no "ready" log line');
  const entriesAtReady = appendLines(agent).filter((l) => l.time <= readyAt).length;
  const run: FromEmptyRun = { ms: readyAt - spawned, entriesAtReady, cpuS: cpuSeconds(agent.pid), rssMiB: memory(agent.pid).rssMiB, requests: {} };
  await assertConverged(dc, ns, nets, 'vxnetd from empty');
  if (entriesAtReady < TOTAL) await whileAlive(agent, waitForAppends(agent, TOTAL, 300_000));
  await assertEntries(dc, host, 'vxnetd from empty');
  run.requests = requestCounts((await scrape(`${agent.metricsUrl}/metrics`)).body);
  log(`vxnetd from empty: ${fmt.s(run.ms)} s to ready with ${entriesAtReady} of ${TOTAL} entries in place (cpu ${run.cpuS.toFixed(2)} s, rss ${run.rssMiB.toFixed(0)} MiB; requests ${JSON.stringify(run.requests)})`);
  await agent.stop();
  return run;
}

async function batchesFromEmpty(dc: DataCentre, host: string): Promise<{ ms: number; devicesMs: number; entriesMs: number }> {
  const ns = dc.host(host).ns;
  const devices = writeFile(dir, `devices-${host}`, `${nets.flatMap((n) => unicastIpOps(n, host)).join('\n')}\n`);
  const entries = writeFile(dir, `fdb-${host}`, `${pairs.map(fdbLine).join('\n')}\n`);
  await quiesce('ip -batch + bridge -batch', ns, QUIET);
  const devicesMs = await timedRun([ip, '-n', ns, '-batch', devices], 'ip -batch (devices)');
  const entriesMs = await timedRun([bridgeBin, '-n', ns, '-batch', entries], 'bridge -batch');
  await assertConverged(dc, ns, nets, 'ip -batch + bridge -batch');
  await assertEntries(dc, host, 'ip -batch + bridge -batch');
  log(`ip -batch + bridge -batch from empty: ${fmt.s(devicesMs + entriesMs)} s (devices ${fmt.s(devicesMs)} s, entries ${fmt.s(entriesMs)} s)`);
  return { ms: devicesMs + entriesMs, devicesMs, entriesMs };
}

async function attempt<T>(what: string, failures: string[], fn: () => Promise<T>): Promise<T | undefined> {
  try {
    return await fn();
  } catch (error) {
    const message = ((error as Error).message ?? String(error)).split('\n')[0]!.slice(0, 300);
    log(`${what} FAILED: ${message}`);
    failures.push(message);
    return undefined;
  }
}

main(async () => {
  log(`flood entries: ${N} networks × ${P} peers = ${TOTAL} entries, order ${args.order}, ${R} run(s) of each method; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const foreign = foreignActivity();
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);
  const hosts: string[] = [];
  for (let r = 1; r <= R; r++) {
    hosts.push(`brb${r}`, `vx${r}`, ...(args.restart ? [`vxr${r}`] : []), ...(args.perOp ? [`brop${r}`] : []), ...(args.fromEmpty ? [`ipbr${r}`, `vxe${r}`] : []));
  }
  const batchRuns: number[] = [];
  const agentRuns: AgentEntriesRun[] = [];
  const restartRuns: Array<AgentEntriesRun & { nodeStartMs: number; entriesAtReady: number }> = [];
  const restartFailures: string[] = [];
  const perOpRuns: Array<{ ms: number; roundBatchMs: number }> = [];
  const perProcessMs: number[] = [];
  const emptyBatchRuns: Array<{ ms: number; devicesMs: number; entriesMs: number }> = [];
  const emptyAgentRuns: FromEmptyRun[] = [];
  const agentFailures: string[] = [];
  const emptyFailures: string[] = [];

  await withDataCentre(hosts, async (dc) => {
    for (let r = 1; r <= R; r++) {
      log(`run ${r} of ${R}`);
      const roundBatchMs = await bridgeBatch(dc, `brb${r}`);
      batchRuns.push(roundBatchMs);
      await discardHost(dc, `brb${r}`, dc.fabricNs, QUIET);
      const a = await attempt('vxnetd entries', agentFailures, () => agentEntries(dc, `vx${r}`));
      if (a) agentRuns.push({ ...a, roundBatchMs });
      await discardHost(dc, `vx${r}`, dc.fabricNs, QUIET);
      if (args.restart) {
        const x = await attempt('vxnetd restart', restartFailures, () => agentRestartEntries(dc, `vxr${r}`));
        if (x) restartRuns.push({ ...x, roundBatchMs });
        await discardHost(dc, `vxr${r}`, dc.fabricNs, QUIET);
      }
      if (args.perOp) {
        const p = await perOp(dc, `brop${r}`, roundBatchMs);
        perOpRuns.push({ ms: p.ms, roundBatchMs });
        if (p.perProcessMs !== undefined) perProcessMs.push(p.perProcessMs);
        await discardHost(dc, `brop${r}`, dc.fabricNs, QUIET);
      }
      if (args.fromEmpty) {
        const b = await batchesFromEmpty(dc, `ipbr${r}`);
        emptyBatchRuns.push(b);
        await discardHost(dc, `ipbr${r}`, dc.fabricNs, QUIET);
        const e = await attempt('vxnetd from empty', emptyFailures, () => agentFromEmpty(dc, `vxe${r}`));
        if (e) emptyAgentRuns.push({ ...e, roundMs: b.ms });
        await discardHost(dc, `vxe${r}`, dc.fabricNs, QUIET);
      }
    }
  });

  const best = (v: number[]) => Math.min(...v);
  const median = (v: number[]) => {
    const sorted = [...v].sort((a, b) => a - b);
    const mid = Math.floor(sorted.length / 2);
    return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
  };
  const spread = (v: number[]) => (v.length > 1 ? `${fmt.s(Math.min(...v))}–${fmt.s(Math.max(...v))}` : '—');
  const batchBest = best(batchRuns);
  const rows: Array<Array<string | number>> = [[`bridge -batch (${TOTAL} fdb append, 1 process)`, fmt.s(batchBest), fmt.s(median(batchRuns)), spread(batchRuns), fmt.x(1), fmt.x(1), '']];
  if (agentRuns.length) {
    const a = agentRuns.reduce((x, y) => (y.ms < x.ms ? y : x));
    rows.push([
      'vxnetd: members keys put → last entry appended',
      fmt.s(a.ms),
      fmt.s(median(agentRuns.map((x) => x.ms))),
      spread(agentRuns.map((x) => x.ms)),
      fmt.x(a.ms / batchBest),
      fmt.x(median(agentRuns.map((x) => x.ms / x.roundBatchMs!))),
      `puts took ${fmt.s(a.putMs)} s, last put acknowledged → last entry ${fmt.s(a.afterLastPutMs)} s; agent cpu ${a.cpuS.toFixed(1)} s; rss ${a.rssMiB.toFixed(0)} MiB; requests ${Object.entries(a.requests).filter(([, n]) => n).map(([op, n]) => `${op} ${n}`).join(', ')}${agentFailures.length ? `; FAILED ${agentFailures.length}: ${agentFailures[0]}` : ''}`,
    ]);
  } else rows.push(['vxnetd: members keys put → last entry appended', '—', '—', '—', '—', '—', `FAILED: ${agentFailures[0]}`]);
  if (restartRuns.length) {
    const ms = restartRuns.map((x) => x.ms);
    const x = restartRuns.reduce((a, b) => (b.ms < a.ms ? b : a));
    rows.push([
      'vxnetd: members in etcd, agent start over the devices → last entry',
      fmt.s(best(ms)),
      fmt.s(median(ms)),
      spread(ms),
      fmt.x(best(ms) / batchBest),
      fmt.x(median(restartRuns.map((y) => y.ms / y.roundBatchMs!))),
      `of which Node start-up ${fmt.s(x.nodeStartMs)} s; entries at ready ${restartRuns.map((y) => y.entriesAtReady).join(', ')}; cpu ${x.cpuS.toFixed(1)} s; rss ${x.rssMiB.toFixed(0)} MiB; requests ${Object.entries(x.requests).filter(([, n]) => n).map(([op, n]) => `${op} ${n}`).join(', ')}${restartFailures.length ? `; FAILED ${restartFailures.length}: ${restartFailures[0]}` : ''}`,
    ]);
  } else if (args.restart) rows.push(['vxnetd: members in etcd, agent start over the devices → last entry', '—', '—', '—', '—', '—', `FAILED: ${restartFailures[0]}`]);
  if (perOpRuns.length) {
    const ms = perOpRuns.map((x) => x.ms);
    rows.push([
      'one bridge process per entry',
      fmt.s(best(ms)),
      fmt.s(median(ms)),
      spread(ms),
      fmt.x(best(ms) / batchBest),
      fmt.x(median(perOpRuns.map((x) => x.ms / x.roundBatchMs))),
      perProcessMs.length ? `estimate: bridge -batch + ${TOTAL} × ${median(perProcessMs).toFixed(2)} ms per bridge process (measured on ${args.perOpSample} entries)` : '',
    ]);
  }
  log(`load average at the end ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  const m = machine();
  console.log(`\n## Unicast flood entries: ${N} networks × ${P} peers (${TOTAL} entries), order ${args.order}, ${R} run(s) — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}, ${m.iproute2}\n`);
  console.log(table(['entries alone (devices exist)', 'best s', 'median s', 'range s', '÷ bridge -batch (best)', "÷ same run's bridge -batch (median)", 'notes'], rows));
  if (args.fromEmpty) {
    const eb = emptyBatchRuns.map((x) => x.ms);
    const ebBest = best(eb);
    const emptyRows: Array<Array<string | number>> = [
      [
        'ip -batch (devices) + bridge -batch (entries)',
        fmt.s(ebBest),
        fmt.s(median(eb)),
        spread(eb),
        fmt.x(1),
        fmt.x(1),
        `devices ${emptyBatchRuns.map((x) => fmt.s(x.devicesMs)).join(', ')} s; entries ${emptyBatchRuns.map((x) => fmt.s(x.entriesMs)).join(', ')} s`,
      ],
    ];
    if (emptyAgentRuns.length) {
      const ms = emptyAgentRuns.map((x) => x.ms);
      const e = emptyAgentRuns.reduce((x, y) => (y.ms < x.ms ? y : x));
      emptyRows.push([
        'vxnetd: keys in etcd, agent start → ready',
        fmt.s(best(ms)),
        fmt.s(median(ms)),
        spread(ms),
        fmt.x(best(ms) / ebBest),
        fmt.x(median(emptyAgentRuns.map((x) => x.ms / x.roundMs!))),
        `entries in place at ready: ${emptyAgentRuns.map((x) => x.entriesAtReady).join(', ')} of ${TOTAL}; cpu ${e.cpuS.toFixed(1)} s; rss ${e.rssMiB.toFixed(0)} MiB; requests ${Object.entries(e.requests).filter(([, n]) => n).map(([op, n]) => `${op} ${n}`).join(', ')}${emptyFailures.length ? `; FAILED ${emptyFailures.length}: ${emptyFailures[0]}` : ''}`,
      ]);
    } else emptyRows.push(['vxnetd: keys in etcd, agent start → ready', '—', '—', '—', '—', '—', `FAILED: ${emptyFailures[0]}`]);
    console.log(`\n${table(['from empty (devices and entries)', 'best s', 'median s', 'range s', '÷ ip+bridge -batch (best)', "÷ same run's (median)", 'notes'], emptyRows)}`);
  }
  if (agentRuns.length) {
    const ratio = Math.min(...agentRuns.map((x) => x.ms)) / batchBest;
    console.log(`\ntarget (where the best agents stand) vxnetd ≤ 1.5× bridge -batch for the entries: ${fmt.x(ratio)} → ${ratio <= 1.5 ? 'met' : 'NOT met'} (median of each run's ratio to its own round: ${fmt.x(median(agentRuns.map((x) => x.ms / x.roundBatchMs!)))})`);
  }
  record('flood-entries', { networks: N, peers: P, order: args.order, repeat: R, batchMs: batchRuns, agent: agentRuns, agentFailures, restart: restartRuns, restartFailures, perOpMs: perOpRuns.map((x) => x.ms), perProcessMs, fromEmptyBatches: emptyBatchRuns, fromEmptyAgent: emptyAgentRuns, emptyFailures, foreign });
  if (agentFailures.length || emptyFailures.length || restartFailures.length) process.exitCode = 1;
});
