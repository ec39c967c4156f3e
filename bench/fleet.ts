/**
 * A fleet of hosts with unicast flooding (issue 16, item 5): H hosts (network namespaces) on a
 * 3-member etcd, every agent `--scope attached --flood unicast`, on a fabric that drops VXLAN
 * multicast (nftables, ff05::/16), so VMs on different hosts reach each other only through the
 * all-zeros flood entries the agents keep.
 *
 *   sudo npx tsx bench/fleet.ts [--hosts 20] [--networks 200] [--per-network 5] [--vm-networks 20]
 *
 * 1. Set-up (untimed): N network specs in etcd (attached nowhere), H agents started and ready;
 *    for each of the --vm-networks sampled networks, a VM (namespace, veth, address in
 *    2001:db8:<i>::/64) on the first two of its hosts and on one more host for step 3, parked on a
 *    bridge `vmpark` of its host until the network's bridge exists. In every VM the neighbour
 *    solicitation is retried every 10 ms (net.ipv6.neigh.eth0.retrans_time_ms=10,
 *    mcast_solicit=1000) instead of every second, so the first ping reply says when the overlay
 *    started to work, not when the next ND timer fired.
 * 2. New networks: one network after the other at --rate networks/s, each attached to
 *    --per-network random hosts in one transaction (the scheduler's put). For a sampled network,
 *    at the put: a script plugs each VM's port into br<hex> as soon as that bridge exists
 *    (`ip link set … master` retried every 10 ms), then pings from one VM to the other (one
 *    request every 10 ms until the first reply, within 60 s). Measured per network: put → both VMs plugged
 *    (the bridges exist on both VM hosts), put → first echo reply; and for every network, from
 *    the agents' own log time stamps: put → every attached host's status `ready` and put → the
 *    last flood entry appended on any of its hosts (each host floods to the K−1 others).
 * 3. Joins: for each sampled network, one more host is attached (one put, at --join-rate per s);
 *    its VM is plugged and pings the first VM. Measured the same way; this is "one attach" with
 *    K hosts already there (K entries on the new host, one on each of the others).
 * 4. Per phase: etcd revisions (write transactions) per second and the keys written, by kind,
 *    from a watch of the bench on the whole prefix (attachments, statuses, members keys, agent
 *    liveness); each member's /metrics before and after (db size, keys, watchers, watch
 *    streams, events sent, gRPC bytes); per agent: RSS (VmRSS, VmHWM), CPU, and the bytes on its
 *    uplink u0 (the host's namespace holds nothing else that talks: this is the agent's etcd
 *    traffic, plus the few pings).
 *
 * All hosts share this machine's kernel: their kernel work queues on one RTNL lock and its CPUs,
 * which real hosts do not share. The figures are upper bounds for that reason too.
 */
import { loadavg } from 'node:os';
import type { IKeyValue } from 'etcd3';
import {
  cpuSeconds,
  fmt,
  foreignActivity,
  log,
  machine,
  main,
  memory,
  networks,
  now,
  parseArgs,
  percentile,
  putNetworks,
  record,
  sleep,
  startAgent,
  table,
  withDataCentre,
  type AgentHandle,
  type BenchNetwork,
  type DataCentre,
} from './lib.js';
import { parseSamples } from '../native-tests/harness/observe.js';

const args = parseArgs('sudo npx tsx bench/fleet.ts --hosts 20 --networks 200', {
  hosts: { default: 20, help: 'hosts (namespaces), each with an agent' },
  networks: { default: 200, help: 'networks, each attached to --per-network random hosts (200 × 5 over 20 hosts: 50 per host)' },
  perNetwork: { default: 5, help: 'hosts attached to each network' },
  vmNetworks: { default: 20, help: 'networks (spread over the run) that get VMs and ping probes' },
  rate: { default: 2, help: 'new networks per second (each one transaction of --per-network attachments)' },
  joinRate: { default: 2, help: 'joins per second in step 3' },
  seed: { default: 16, help: 'seed of the random host choice' },
  settle: { default: 5, help: 'seconds after each phase before its figures are read' },
});

const H = args.hosts;
const N = args.networks;
const K = Math.min(args.perNetwork, H - 1);
const S = Math.min(args.vmNetworks, N);
const hostNames = Array.from({ length: H }, (_, i) => `h${String(i + 1).padStart(2, '0')}`);
const nets = networks(N);
const PREFIX = '/v1';

/** mulberry32: a small seeded PRNG, so a rerun attaches the same hosts. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Plan {
  net: BenchNetwork;
  hosts: string[];
  /** Sampled: VMs on hosts[0], hosts[1], and a joiner host (attached in step 3). */
  vms?: { a: Vm; b: Vm; c: Vm; joiner: string };
}

interface Vm {
  name: string;
  host: string;
  ns: string;
  port: string;
  address: string;
}

/** Hosts per network: random, but balanced (least-loaded first among a random order). */
function planNetworks(): Plan[] {
  const random = rng(args.seed);
  const load = new Map(hostNames.map((h) => [h, 0]));
  const every = Math.max(1, Math.floor(N / Math.max(1, S)));
  return nets.map((net, i) => {
    const order = [...hostNames].sort(() => random() - 0.5).sort((x, y) => load.get(x)! - load.get(y)!);
    const hosts = order.slice(0, K);
    for (const h of hosts) load.set(h, load.get(h)! + 1);
    const plan: Plan = { net, hosts };
    if (i % every === 0 && Math.floor(i / every) < S) {
      const joiner = order[K]!;
      const vm = (suffix: string, host: string, n: number): Vm => {
        const name = `v${i}${suffix}`;
        return { name, host, ns: '', port: `vm-${name}`, address: `2001:db8:${(i + 1).toString(16)}::${n}` };
      };
      plan.vms = { a: vm('a', hosts[0]!, 1), b: vm('b', hosts[1]!, 2), c: vm('c', joiner, 3), joiner };
    }
    return plan;
  });
}

// ------------------------------------------------------------ etcd ----

const ETCD_METRICS = [
  'etcd_mvcc_db_total_size_in_bytes',
  'etcd_mvcc_db_total_size_in_use_in_bytes',
  'etcd_debugging_mvcc_keys_total',
  'etcd_debugging_mvcc_watcher_total',
  'etcd_debugging_mvcc_watch_stream_total',
  'etcd_debugging_mvcc_events_total',
  'etcd_debugging_mvcc_slow_watcher_total',
  'etcd_mvcc_put_total',
  'etcd_mvcc_txn_total',
  'etcd_mvcc_range_total',
  'etcd_network_client_grpc_sent_bytes_total',
  'etcd_network_client_grpc_received_bytes_total',
  'grpc_server_started_total',
  'process_resident_memory_bytes',
];

async function etcdMetrics(dc: DataCentre): Promise<Array<Record<string, number>>> {
  return Promise.all(
    dc.etcdEndpoints.map(async (endpoint) => {
      const body = await (await fetch(`${endpoint}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
      const samples = parseSamples(body);
      const out: Record<string, number> = {};
      for (const name of ETCD_METRICS) {
        let sum = 0;
        let seen = false;
        for (const [series, value] of samples) {
          const bare = series.includes('{') ? series.slice(0, series.indexOf('{')) : series;
          if (bare === name) {
            sum += value;
            seen = true;
          }
        }
        if (seen) out[name] = sum;
      }
      return out;
    }),
  );
}

async function revision(dc: DataCentre): Promise<number> {
  const etcd = await dc.etcd();
  const response = await etcd.kv.range({ key: Buffer.from(`${PREFIX}/none`) });
  return Number(response.header.revision);
}

/** What a key is, for counting writes. */
function kindOf(key: string): string {
  const rest = key.slice(PREFIX.length + 1);
  if (rest.startsWith('networks/')) return 'network';
  if (rest.startsWith('members/')) return 'member';
  if (/^hosts\/[^/]+\/networks\//.test(rest)) return 'attachment';
  if (/^hosts\/[^/]+\/status\//.test(rest)) return 'status';
  if (/^hosts\/[^/]+\/agent$/.test(rest)) return 'agent';
  return 'other';
}

class WriteCounter {
  readonly events: Array<{ revision: number; kind: string; put: boolean; at: number; bytes: number }> = [];
  between(fromRevision: number, toRevision: number): Record<string, number> {
    const out: Record<string, number> = {};
    for (const e of this.events) {
      if (e.revision <= fromRevision || e.revision > toRevision) continue;
      const k = `${e.kind}${e.put ? '' : ' (delete)'}`;
      out[k] = (out[k] ?? 0) + 1;
    }
    return out;
  }
  bytesBetween(fromRevision: number, toRevision: number): number {
    return this.events.filter((e) => e.revision > fromRevision && e.revision <= toRevision).reduce((s, e) => s + e.bytes, 0);
  }
}

// ------------------------------------------------------------ hosts ----

interface HostSample {
  rssMiB: number;
  hwmMiB: number;
  cpuS: number;
  rx: number;
  tx: number;
}

async function sampleHost(dc: DataCentre, agent: AgentHandle): Promise<HostSample> {
  const r = await dc.exec(dc.host(agent.host).ns, ['cat', '/sys/class/net/u0/statistics/rx_bytes', '/sys/class/net/u0/statistics/tx_bytes']);
  const [rx, tx] = r.stdout.trim().split('\n').map(Number);
  const mem = memory(agent.pid);
  return { rssMiB: mem.rssMiB, hwmMiB: mem.hwmMiB, cpuS: cpuSeconds(agent.pid), rx: rx!, tx: tx! };
}

async function sampleHosts(dc: DataCentre, agents: Map<string, AgentHandle>): Promise<Map<string, HostSample>> {
  const out = new Map<string, HostSample>();
  for (const [host, agent] of agents) out.set(host, await sampleHost(dc, agent));
  return out;
}

// -------------------------------------------------------------- VMs ----

async function makeVm(dc: DataCentre, vm: Vm): Promise<void> {
  const made = await dc.addVm(vm.host, 'vmpark', vm.name, vm.address);
  vm.ns = made.ns;
  vm.port = made.hostPort;
  // Resolve neighbours every 10 ms (for 10 s) rather than every second: see the header.
  for (const [key, value] of [
    ['net.ipv6.neigh.eth0.retrans_time_ms', '10'],
    ['net.ipv6.neigh.eth0.mcast_solicit', '1000'],
  ]) {
    const r = await dc.exec(vm.ns, ['sysctl', '-q', '-w', `${key}=${value}`]);
    if (r.code !== 0) throw new Error(`sysctl ${key} in ${vm.ns}: ${r.stderr}`);
  }
}

/**
 * Plugs each VM's port into `bridge` on its host as soon as that bridge exists, then pings from
 * `from` to `to` until the first reply. Returns wall-clock ms of "all plugged" and "first reply".
 */
async function probe(dc: DataCentre, bridge: string, plug: Vm[], from: Vm, to: Vm, timeoutS = 60): Promise<{ pluggedAt: number; repliedAt: number } | { error: string }> {
  const lines = [
    'set -u',
    'plug() { until ip -n "$1" link set dev "$2" master "$3" 2>/dev/null; do sleep 0.01; done; }',
    ...plug.map((vm) => `plug ${dc.host(vm.host).ns} ${vm.port} ${bridge} &`),
    'wait',
    'echo plugged $(date +%s%N)',
    // One request every 10 ms; ping -w 2 again and again, because the VM's neighbour resolution gives
    // up after 10 s (mcast_solicit 1000 × 10 ms) and a network can take longer (RTNL held by others).
    `end=$(( $(date +%s) + ${timeoutS} ))`,
    'while :; do',
    `  if ping -6 -n -q -c 1 -i 0.01 -w 2 ${to.address} >/dev/null 2>&1; then echo replied $(date +%s%N); break; fi`,
    '  if [ "$(date +%s)" -ge "$end" ]; then echo noreply $(date +%s%N); break; fi',
    'done',
  ];
  const r = await dc.exec(from.ns, ['timeout', String(timeoutS + 30), 'bash', '-c', lines.join('\n')], { timeoutMs: (timeoutS + 40) * 1_000 });
  const plugged = /plugged (\d+)/.exec(r.stdout)?.[1];
  const replied = /replied (\d+)/.exec(r.stdout)?.[1];
  if (!plugged || !replied) return { error: `probe ${from.name} → ${to.name} on ${bridge}: ${r.stdout.trim()} ${r.stderr.trim()} (code ${r.code})` };
  return { pluggedAt: Number(BigInt(plugged) / 1000n) / 1000, repliedAt: Number(BigInt(replied) / 1000n) / 1000 };
}

// ----------------------------------------------------------- agents ----

/** Log time of the first line at or after `since` matching, per agent. */
function firstLogAfter(agent: AgentHandle, since: number, pred: (l: any) => boolean): number | undefined {
  for (const l of agent.logs()) if (typeof l.time === 'number' && l.time >= since && pred(l)) return l.time;
  return undefined;
}

function lastLogBetween(agent: AgentHandle, since: number, until: number, pred: (l: any) => boolean): number | undefined {
  let last: number | undefined;
  for (const l of agent.logs()) if (typeof l.time === 'number' && l.time >= since && l.time <= until && pred(l)) last = l.time;
  return last;
}

interface NetResult {
  hex: string;
  putAckMs: number;
  /** put → every attached host's status ready (its devices). */
  readyMs?: number;
  /** put → the last flood entry of the network appended on any host. */
  meshMs?: number;
  pluggedMs?: number;
  pingMs?: number;
  probeError?: string;
}

function summarize(label: string, values: Array<number | undefined>): string[] {
  const v = values.filter((x): x is number => x !== undefined);
  if (!v.length) return [label, '0', '—', '—', '—', '—'];
  return [label, String(v.length), fmt.ms(percentile(v, 50)), fmt.ms(percentile(v, 90)), fmt.ms(percentile(v, 99)), fmt.ms(Math.max(...v))];
}

main(async () => {
  if (H < K + 1) throw new Error(`--hosts must exceed --per-network`);
  const foreign = foreignActivity();
  log(`fleet: ${H} hosts, ${N} networks × ${K} hosts, ${S} with VMs; load average ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);
  const plans = planNetworks();
  const sampled = plans.filter((p) => p.vms);
  const r: Record<string, unknown> = { hosts: H, networks: N, perNetwork: K, vmNetworks: sampled.length, rate: args.rate, foreign, loadStart: loadavg() };
  const phase1: NetResult[] = [];
  const phase2: NetResult[] = [];
  const phaseStats: Record<string, any> = {};

  await withDataCentre(
    hostNames,
    async (dc) => {
      await dc.blockUnderlayMulticast();
      const etcd = await dc.etcd();
      await putNetworks(dc, nets);
      log(`${N} network specs in etcd`);

      // The bench's own watch of everything, to count writes by kind.
      const counter = new WriteCounter();
      const watcher = await etcd.watch().prefix(`${PREFIX}/`).create();
      const onEvent = (put: boolean) => (kv: IKeyValue) =>
        counter.events.push({ revision: Number(kv.mod_revision), kind: kindOf(kv.key.toString()), put, at: now(), bytes: kv.key.length + kv.value.length });
      watcher.on('put', onEvent(true));
      watcher.on('delete', onEvent(false));

      const agents = new Map<string, AgentHandle>();
      const agentArgs = ['--scope', 'attached', '--flood', 'unicast', '--etcd-endpoints', dc.etcdEndpoints.join(','), '--log-level', 'info'];
      const startRev = await revision(dc);
      const started = now();
      for (const host of hostNames) agents.set(host, await startAgent(dc, host, agentArgs));
      await Promise.all([...agents.values()].map((a) => a.waitReady(120_000)));
      log(`${H} agents ready after ${fmt.s(now() - started)} s`);

      // Parking bridges and VMs.
      const vmHosts = new Set(sampled.flatMap((p) => [p.vms!.a.host, p.vms!.b.host, p.vms!.c.host]));
      for (const host of vmHosts) {
        const ns = dc.host(host).ns;
        for (const cmd of [
          ['ip', 'link', 'add', 'name', 'vmpark', 'type', 'bridge'],
          ['ip', 'link', 'set', 'vmpark', 'up'],
        ]) {
          const res = await dc.exec(ns, cmd);
          if (res.code !== 0) throw new Error(`${cmd.join(' ')} in ${ns}: ${res.stderr}`);
        }
      }
      for (const p of sampled) for (const vm of [p.vms!.a, p.vms!.b, p.vms!.c]) await makeVm(dc, vm);
      log(`${sampled.length * 3} VMs parked`);
      await sleep(args.settle * 1_000);

      const snapshot = async (label: string, fromRev: number, t0: number) => {
        const toRev = await revision(dc);
        const seconds = (now() - t0) / 1000;
        const hosts = await sampleHosts(dc, agents);
        const members = await etcdMetrics(dc);
        phaseStats[label] = { fromRev, toRev, seconds, writes: counter.between(fromRev, toRev), writtenBytes: counter.bytesBetween(fromRev, toRev), hosts: Object.fromEntries(hosts), etcd: members };
        log(`${label}: ${toRev - fromRev} revisions in ${seconds.toFixed(1)} s; writes ${JSON.stringify(counter.between(fromRev, toRev))}`);
        return { toRev, hosts };
      };
      let mark = await snapshot('start-up', startRev, started);

      // ---- phase 1: new networks -------------------------------------
      const p1Rev = mark.toRev;
      const p1Start = now();
      const probes: Array<Promise<void>> = [];
      const interval = 1000 / args.rate;
      for (const [i, plan] of plans.entries()) {
        const due = p1Start + i * interval;
        if (due > now()) await sleep(due - now());
        const t0 = Date.now();
        await etcd.kv.txn({ success: plan.hosts.map((h) => ({ request_put: { key: Buffer.from(`${PREFIX}/hosts/${h}/networks/${plan.net.hex}`), value: Buffer.from('{}') } })) });
        const result: NetResult = { hex: plan.net.hex, putAckMs: Date.now() - t0 };
        phase1.push(result);
        (result as NetResult & { t0: number }).t0 = t0;
        if (plan.vms) {
          const { a, b } = plan.vms;
          probes.push(
            probe(dc, plan.net.bridge, [a, b], a, b).then((p) => {
              if ('error' in p) result.probeError = p.error;
              else {
                result.pluggedMs = p.pluggedAt - t0;
                result.pingMs = p.repliedAt - t0;
              }
            }),
          );
        }
      }
      await Promise.all(probes);
      await sleep(args.settle * 1_000);
      const p1End = now();
      for (const [i, plan] of plans.entries()) {
        const res = phase1[i]! as NetResult & { t0: number };
        const vni = plan.net.hex;
        const ready = plan.hosts.map((h) => firstLogAfter(agents.get(h)!, res.t0, (l) => l.op === 'status' && l.vni === vni && l.state === 'ready'));
        if (ready.every((t) => t !== undefined)) res.readyMs = Math.max(...(ready as number[])) - res.t0;
        const mesh = plan.hosts.map((h) => lastLogBetween(agents.get(h)!, res.t0, p1End, (l) => l.op === 'appendFloodEntries' && l.vni === vni));
        if (mesh.every((t) => t !== undefined)) res.meshMs = Math.max(...(mesh as number[])) - res.t0;
      }
      mark = await snapshot('new networks', p1Rev, p1Start);

      // ---- phase 2: one more host joins each sampled network -----------
      const p2Rev = mark.toRev;
      const p2Start = now();
      const joinProbes: Array<Promise<void>> = [];
      for (const [i, plan] of sampled.entries()) {
        const due = p2Start + (i * 1000) / args.joinRate;
        if (due > now()) await sleep(due - now());
        const { a, c, joiner } = plan.vms!;
        const t0 = Date.now();
        await etcd.put(`${PREFIX}/hosts/${joiner}/networks/${plan.net.hex}`).value('{}');
        const result = { hex: plan.net.hex, putAckMs: Date.now() - t0, t0 } as NetResult & { t0: number };
        phase2.push(result);
        joinProbes.push(
          probe(dc, plan.net.bridge, [c], c, a).then((p) => {
            if ('error' in p) result.probeError = p.error;
            else {
              result.pluggedMs = p.pluggedAt - t0;
              result.pingMs = p.repliedAt - t0;
            }
          }),
        );
      }
      await Promise.all(joinProbes);
      await sleep(args.settle * 1_000);
      const p2End = now();
      for (const [i, plan] of sampled.entries()) {
        const res = phase2[i]! as NetResult & { t0: number };
        const vni = plan.net.hex;
        const all = [...plan.hosts, plan.vms!.joiner];
        const ready = firstLogAfter(agents.get(plan.vms!.joiner)!, res.t0, (l) => l.op === 'status' && l.vni === vni && l.state === 'ready');
        if (ready !== undefined) res.readyMs = ready - res.t0;
        const mesh = all.map((h) => lastLogBetween(agents.get(h)!, res.t0, p2End, (l) => l.op === 'appendFloodEntries' && l.vni === vni));
        if (mesh.every((t) => t !== undefined)) res.meshMs = Math.max(...(mesh as number[])) - res.t0;
      }
      mark = await snapshot('joins', p2Rev, p2Start);

      // ---- idle: what a quiet fleet writes and sends ----------------------
      const idleRev = mark.toRev;
      const idleStart = now();
      await sleep(30_000);
      await snapshot('idle 30 s', idleRev, idleStart);

      // Keys by kind at the end, and a check that every flood list is exact.
      const keys = await etcd.getAll().prefix(`${PREFIX}/`).keys();
      const byKind: Record<string, number> = {};
      for (const k of keys) byKind[kindOf(k)] = (byKind[kindOf(k)] ?? 0) + 1;
      r.keys = byKind;
      let wrong = 0;
      const address = (h: string) => dc.host(h).underlayAddress;
      const carriers = new Map(plans.map((p) => [p.net.hex, [...p.hosts, ...(p.vms ? [p.vms.joiner] : [])]]));
      for (const host of hostNames) {
        const res = await dc.exec(dc.host(host).ns, ['bridge', '-j', 'fdb', 'show'], { timeoutMs: 60_000 });
        const entries = JSON.parse(res.stdout || '[]') as Array<{ mac: string; ifname?: string; dst?: string; state?: string; flags?: string[] }>;
        for (const plan of plans) {
          const mine = carriers.get(plan.net.hex)!;
          if (!mine.includes(host)) continue;
          const have = entries.filter((e) => e.ifname === plan.net.vxlan && e.mac === '00:00:00:00:00:00' && e.state === 'permanent').map((e) => e.dst).sort();
          const want = mine.filter((h) => h !== host).map(address).sort();
          if (JSON.stringify(have) !== JSON.stringify(want)) wrong++;
        }
      }
      r.wrongFloodLists = wrong;
      await watcher.cancel();
      const warnings = new Map<string, number>();
      for (const a of agents.values()) {
        for (const l of a.logs().filter((x) => x.level >= 40)) {
          const key = `${String(l.msg).replace(/[0-9a-f]{6}|fd00:[0-9a-f:]+/g, '…')}${l.reason ? ` (${String(l.reason).slice(0, 120)})` : ''}${l.err ? ` (${String(l.err).slice(0, 120)})` : ''}`;
          warnings.set(key, (warnings.get(key) ?? 0) + 1);
        }
        const raw = a.logs().filter((x) => x.raw !== undefined);
        if (raw.length) log(`agent ${a.host}: ${raw.length} lines that are not JSON, first: ${raw[0].raw}`);
      }
      r.warnings = Object.fromEntries(warnings);
      for (const [w, n] of warnings) log(`agent warnings: ${n} × ${w}`);
    },
    { etcdMembers: 3 },
  );

  r.phase1 = phase1;
  r.phase2 = phase2;
  r.phases = phaseStats;
  r.loadEnd = loadavg();
  log(`load average at the end ${loadavg().map((x) => x.toFixed(1)).join(' ')}`);

  // ------------------------------------------------------------ output ----
  const m = machine();
  console.log(`\n## Fleet: ${H} hosts, ${N} networks × ${K} hosts (${S} with VMs), 3 etcd members, --scope attached --flood unicast — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}, ${m.etcd}\n`);
  console.log(
    table(
      ['latency, ms after the put', 'n', 'p50', 'p90', 'p99', 'max'],
      [
        summarize('new network (K attachments in 1 txn): put acknowledged', phase1.map((x) => x.putAckMs)),
        summarize('new network: every attached host ready (devices)', phase1.map((x) => x.readyMs)),
        summarize('new network: last flood entry appended (K×(K−1) entries)', phase1.map((x) => x.meshMs)),
        summarize('new network: both VMs plugged (bridges exist)', phase1.map((x) => x.pluggedMs)),
        summarize('new network: first ping reply VM → VM', phase1.map((x) => x.pingMs)),
        summarize('join (1 attachment): put acknowledged', phase2.map((x) => x.putAckMs)),
        summarize("join: the new host's status ready", phase2.map((x) => x.readyMs)),
        summarize('join: last flood entry appended (K on the new host, 1 on each other)', phase2.map((x) => x.meshMs)),
        summarize("join: the new host's VM plugged", phase2.map((x) => x.pluggedMs)),
        summarize('join: first ping reply new VM → old VM', phase2.map((x) => x.pingMs)),
      ],
    ),
  );
  const errors = [...phase1, ...phase2].filter((x) => x.probeError).map((x) => x.probeError);
  if (errors.length) console.log(`\nprobe failures: ${errors.length}\n  ${errors.slice(0, 5).join('\n  ')}`);

  const phaseRows: Array<Array<string | number>> = [];
  const mib = (b: number) => (b / 2 ** 20).toFixed(1);
  let previous: Record<string, HostSample> | undefined;
  for (const [label, s] of Object.entries(phaseStats)) {
    const hosts = s.hosts as Record<string, HostSample>;
    const rss = Object.values(hosts).map((h) => h.rssMiB);
    const traffic = Object.entries(hosts).map(([h, x]) => (x.rx + x.tx - (previous ? previous[h]!.rx + previous[h]!.tx : 0)) / 1024);
    const cpu = Object.entries(hosts).map(([h, x]) => x.cpuS - (previous ? previous[h]!.cpuS : 0));
    const e0 = s.etcd[0] as Record<string, number>;
    const watchers = (s.etcd as Array<Record<string, number>>).reduce((sum, e) => sum + (e.etcd_debugging_mvcc_watcher_total ?? 0), 0);
    const streams = (s.etcd as Array<Record<string, number>>).reduce((sum, e) => sum + (e.etcd_debugging_mvcc_watch_stream_total ?? 0), 0);
    phaseRows.push([
      label,
      s.seconds.toFixed(1),
      s.toRev - s.fromRev,
      ((s.toRev - s.fromRev) / s.seconds).toFixed(1),
      Object.entries(s.writes as Record<string, number>).map(([k, n]) => `${k} ${n}`).join(', '),
      `${mib(e0.etcd_mvcc_db_total_size_in_bytes ?? NaN)} / ${mib(e0.etcd_mvcc_db_total_size_in_use_in_bytes ?? NaN)}`,
      `${watchers} / ${streams}`,
      `${percentile(rss, 50).toFixed(0)} (${Math.min(...rss).toFixed(0)}–${Math.max(...rss).toFixed(0)})`,
      `${percentile(cpu, 50).toFixed(2)} (max ${Math.max(...cpu).toFixed(2)})`,
      `${percentile(traffic, 50).toFixed(0)} (max ${Math.max(...traffic).toFixed(0)})`,
    ]);
    previous = hosts;
  }
  console.log(`\n${table(['phase', 's', 'etcd revisions', 'per s', 'keys written (bench watch)', 'db MiB total / in use (member 0)', 'watchers / watch streams (3 members)', 'agent RSS MiB p50 (range)', 'agent CPU s p50', 'agent u0 KiB rx+tx p50'], phaseRows)}`);
  console.log(`\nkeys at the end: ${JSON.stringify(r.keys)}; flood lists not exact at the end: ${r.wrongFloodLists}`);
  const last = Object.values(phaseStats).at(-1) as { etcd: Array<Record<string, number>> } | undefined;
  if (last) console.log(`etcd members at the end: ${JSON.stringify(last.etcd)}`);
  record('fleet', r);
});
