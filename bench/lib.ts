/**
 * Shared plumbing for the benches (converge, latency, restart, idle).
 *
 * Every bench builds its own small data centre with the native-test harness
 * (native-tests/harness): a fabric namespace running a private etcd, and one
 * namespace per "host", each with an uplink veth `u0` (MTU 1500). vxnetd runs
 * in one host namespace; the `ip` baselines run in other, equally fresh host
 * namespaces. The harness removes namespaces and kills processes by PID in
 * destroy(), and synchronously on exit/SIGINT/SIGTERM/SIGHUP; long-running
 * helpers started here (`ip monitor`) are killed by PID the same way.
 * withDataCentre() also stops the agents and waits for the kernel to finish
 * tearing the host namespaces down, so a bench leaves a quiet kernel behind;
 * the private etcd keeps its data on /dev/shm (see withDataCentre()).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, hostname, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DataCentre, type AgentHandle } from '../native-tests/harness/datacentre.js';
import { AgentProcess } from '../native-tests/harness/agent.js';
import type { TrackedProcess } from '../native-tests/harness/processes.js';
import { parseSamples, sumSamples } from '../native-tests/harness/observe.js';
import { parseOwnerAlias } from '../src/model/identity.js';
import { sleep } from '../native-tests/harness/wait.js';
import { deterministicMac, formatMac } from '../src/model/mac.js';
import { groupFor, parseGroupBase, reservedGroupReason } from '../src/model/group.js';

export { DataCentre, sleep, type AgentHandle };

export const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
/** First VNI used by the benches: 0x100001 → br100001 / vxlan100001, group ff05::10:1 (clear of IANA's registry). */
export const VNI_BASE = 0x100000;
/** Overlay MTU over the harness's 1500-byte IPv6 underlay (1500 − 70), what vxnetd picks for a spec of `{}`. */
export const OVERLAY_MTU = 1430;
const GROUP_BASE = parseGroupBase('ff05::');

export const now = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------- args ----

export type ArgSpec = Record<string, { default: number | string | boolean; help: string }>;

/** `--name value`, `--name=value` and bare `--flag` for booleans; `--help` prints the spec. */
export function parseArgs<S extends ArgSpec>(usage: string, spec: S, argv = process.argv.slice(2)): { [K in keyof S]: S[K]['default'] } {
  const out: Record<string, number | string | boolean> = {};
  for (const [name, s] of Object.entries(spec)) out[name] = s.default;
  const toKey = (flag: string) => flag.replace(/^--/, '').replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') {
      console.log(`${usage}\n\nOptions:`);
      for (const [name, s] of Object.entries(spec)) {
        const flag = `--${name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
        console.log(`  ${flag.padEnd(24)} ${s.help} (default ${JSON.stringify(s.default)})`);
      }
      process.exit(0);
    }
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const key = toKey(flag);
    if (!flag.startsWith('--') || !(key in spec)) throw new Error(`unknown argument ${arg} (try --help)`);
    const def = spec[key]!.default;
    if (typeof def === 'boolean') {
      out[key] = inline === undefined ? true : inline !== 'false';
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) throw new Error(`${flag} needs a value`);
    if (typeof def === 'number') {
      const value = Number(raw);
      if (!Number.isFinite(value) || value < 0) throw new Error(`${flag} needs a non-negative number, not ${raw}`);
      out[key] = value;
    } else out[key] = raw;
  }
  return out as { [K in keyof S]: S[K]['default'] };
}

// ------------------------------------------------------------ networks ----

export interface BenchNetwork {
  vni: number;
  hex: string;
  bridge: string;
  vxlan: string;
  group: string;
}

export function networks(count: number, first = 1): BenchNetwork[] {
  const list: BenchNetwork[] = [];
  for (let i = first; i < first + count; i++) {
    const vni = VNI_BASE + i;
    const hex = vni.toString(16);
    const group = groupFor(GROUP_BASE, vni);
    const reserved = reservedGroupReason(group);
    if (reserved) throw new Error(`bench VNI ${hex} maps to reserved group ${group.text}: pick another VNI_BASE`);
    list.push({ vni, hex, bridge: `br${hex}`, vxlan: `vxlan${hex}`, group: group.text });
  }
  return list;
}

/**
 * The kernel work vxnetd does for one network, as `ip` commands (without the
 * leading `ip`). Same requests and attributes as the agent (src/agent/apply.ts):
 * the bridge created with its deterministic MAC and without multicast
 * snooping; its MTU (set after creation so it sticks), alias and addrgenmode
 * none while it is down; then up. The vxlan created with MAC, MTU and master;
 * its alias and addrgenmode none; then up. 6 requests, as vxnetd's 6
 * mutating requests (`ip` resolves `master` with an ioctl where vxnetd has
 * the bridge's ifindex from the create's echo).
 */
export function ipOps(net: BenchNetwork, host: string, mtu = OVERLAY_MTU): string[] {
  const brMac = formatMac(deterministicMac(host, 'bridge', net.vni));
  const vxMac = formatMac(deterministicMac(host, 'vxlan', net.vni));
  return [
    // `name` is needed: some hex names (brd…) are ip keywords otherwise.
    `link add name ${net.bridge} address ${brMac} type bridge mcast_snooping 0`,
    `link set dev ${net.bridge} mtu ${mtu} alias vxnetd:${net.hex} addrgenmode none`,
    `link set dev ${net.bridge} up`,
    `link add name ${net.vxlan} address ${vxMac} mtu ${mtu} master ${net.bridge} type vxlan id ${net.vni} group ${net.group} dev u0 ttl 5 dstport 4789`,
    `link set dev ${net.vxlan} alias vxnetd:${net.hex} addrgenmode none`,
    `link set dev ${net.vxlan} up`,
  ];
}


/** Writes `<prefix>/networks/<hex>` = spec for every network, in transactions of 128 puts (etcd's default limit). */
export async function putNetworks(dc: DataCentre, nets: BenchNetwork[], opts: { prefix?: string; spec?: string } = {}): Promise<number> {
  const etcd = await dc.etcd();
  const prefix = opts.prefix ?? dc.prefix;
  const spec = opts.spec ?? '{}';
  const started = now();
  for (let i = 0; i < nets.length; i += 128) {
    const chunk = nets.slice(i, i + 128);
    await etcd
      .if(`${prefix}/networks/${chunk[0]!.hex}`, 'Version', '>', -1)
      .then(...chunk.map((net) => etcd.put(`${prefix}/networks/${net.hex}`).value(spec)))
      .commit();
  }
  return now() - started;
}

// --------------------------------------------------------- kernel state ----

interface IpLink {
  ifname: string;
  ifindex: number;
  flags: string[];
  mtu: number;
  master?: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string; info_data?: { mcast_snooping?: number } };
}

export async function links(dc: DataCentre, ns: string): Promise<IpLink[]> {
  return (await dc.links(ns)) as IpLink[];
}

/** Which of `nets` are not fully there: bridge up, vxlan up with the bridge as master, both at `mtu`, both with the alias. */
export function missingNetworks(all: IpLink[], nets: BenchNetwork[], mtu = OVERLAY_MTU): BenchNetwork[] {
  const byName = new Map(all.map((l) => [l.ifname, l]));
  return nets.filter((net) => {
    const br = byName.get(net.bridge);
    const vx = byName.get(net.vxlan);
    return !(
      br && vx &&
      br.flags.includes('UP') && vx.flags.includes('UP') &&
      vx.master === net.bridge &&
      br.mtu === mtu && vx.mtu === mtu &&
      // The ip baselines set vxnetd 0.1's alias, vxnetd its own with identity and incarnation.
      parseOwnerAlias(br.ifalias)?.hex === net.hex && parseOwnerAlias(vx.ifalias)?.hex === net.hex
    );
  });
}

export async function assertConverged(dc: DataCentre, ns: string, nets: BenchNetwork[], what: string): Promise<void> {
  const all = await links(dc, ns);
  const missing = missingNetworks(all, nets);
  if (missing.length) {
    throw new Error(`${what}: ${missing.length} of ${nets.length} networks not fully up in ${ns} (first: ${missing.slice(0, 3).map((n) => n.hex).join(', ')})`);
  }
  // Same kernel work in every method: a snooping bridge costs the kernel more (README, "How vxnetd treats the kernel").
  const bridges = new Set(nets.map((n) => n.bridge));
  const snooping = all.filter((l) => bridges.has(l.ifname) && l.linkinfo?.info_data?.mcast_snooping !== 0);
  if (snooping.length) throw new Error(`${what}: ${snooping.length} of ${nets.length} bridges in ${ns} snoop multicast (first: ${snooping[0]!.ifname})`);
}

// ------------------------------------------------------------ processes ----

const helpers = new Set<ChildProcess>();
let exitHookInstalled = false;

function killHelpersSync(): void {
  for (const child of helpers) {
    if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  helpers.clear();
}

/** Long-running helper processes (ip monitor) are killed by PID on any exit. */
function trackHelper(child: ChildProcess): void {
  helpers.add(child);
  child.once('exit', () => helpers.delete(child));
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', killHelpersSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    // The harness's own handler (registered earlier) destroys the data
    // centres; exiting here runs the 'exit' hooks of both.
    process.on(sig, () => {
      killHelpersSync();
      process.exit(128 + ({ SIGINT: 2, SIGTERM: 15, SIGHUP: 1 } as const)[sig]);
    });
  }
}

/** Runs a command to completion in the root namespace (or `ip netns exec` it yourself). */
export function run(argv: string[], what: string): string {
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  if (result.status !== 0) {
    throw new Error(`${what}: \`${argv.join(' ')}\` failed (${result.status ?? result.signal}): ${(result.stderr || result.stdout || '').trim().slice(0, 1000)}`);
  }
  return result.stdout;
}

/** Runs `argv` to completion, timed from spawn to exit (wall clock ms). */
export async function timedRun(argv: string[], what: string): Promise<number> {
  const started = now();
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'] });
  trackHelper(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr = (stderr + c).slice(-4000)));
  const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.once('exit', (c, s) => resolve([c, s])));
  const ms = now() - started;
  if (code !== 0) throw new Error(`${what}: \`${argv.slice(0, 8).join(' ')} …\` failed (${code ?? signal}): ${stderr.trim()}`);
  return ms;
}

/**
 * Deletes a host's namespace (and so its devices) once a measurement is
 * done, and waits until the kernel has finished tearing it down: thousands
 * of devices left behind make every later netlink operation on the machine
 * slower (IPv6 address and MLD work on every interface, under the RTNL
 * lock), which would bias the next measurement. The harness's own cleanup
 * later finds the namespace gone, which it accepts.
 */
export async function discardHost(dc: DataCentre, host: string, probeNs: string, quiet: { idlePercent?: number; maxMs?: number } = {}): Promise<void> {
  const ns = dc.host(host).ns;
  const started = now();
  run([findIp(), 'netns', 'del', ns], `delete namespace ${ns}`);
  await quiesce(`teardown of ${ns}`, probeNs, quiet);
  log(`deleted ${ns} (teardown took ${fmt.s(now() - started)} s)`);
}

/**
 * Every vxlan device joins its multicast group on the underlay through one
 * shared UDP socket, whose membership list is bounded by
 * net.core.optmem_max: at the default 131072 bytes about 2,340 IPv6 groups
 * fit and the next `up` fails with ENOMEM, for `ip` and vxnetd alike. Runs
 * with more networks raise it inside their own namespaces, which works where
 * the setting is per network namespace (Linux ≥ 6.9); where it is global,
 * this refuses (it never changes the machine's settings) and says what to do.
 */
export async function allowGroups(dc: DataCentre, host: string, groups: number): Promise<void> {
  const needed = Math.max(131_072, groups * 64);
  const path = '/proc/sys/net/core/optmem_max';
  const ns = dc.host(host).ns;
  // The namespace's own value: a new namespace starts from the kernel's default, whatever the root namespace has.
  const current = await dc.exec(ns, ['cat', path]);
  if (current.code === 0 && Number(current.stdout.trim()) >= needed) return;
  const rootBefore = readFileSync(path, 'utf8').trim();
  const result = await dc.exec(ns, ['sh', '-c', `test -w ${path} && echo ${needed} > ${path} && cat ${path}`]);
  const rootAfter = readFileSync(path, 'utf8').trim();
  if (rootAfter !== rootBefore) {
    writeFileSync(path, rootBefore);
    throw new Error(`net.core.optmem_max is not per namespace on this kernel (restored to ${rootBefore}); for ${groups} multicast groups run: sysctl -w net.core.optmem_max=${needed}`);
  }
  if (result.code !== 0 || Number(result.stdout.trim()) < needed) {
    throw new Error(`cannot raise net.core.optmem_max to ${needed} in ${ns} (needed for ${groups} multicast groups on one underlay): ${result.stderr.trim() || result.stdout.trim()}; run: sysctl -w net.core.optmem_max=${needed}`);
  }
}

/** A scratch directory removed at exit. */
export function scratchDir(label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `vxnetd-bench-${label}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export function writeFile(dir: string, name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

// ---------------------------------------------------------- link monitor ----

export interface MonitorLine {
  /** Wall-clock ms when `ip` received the notification (`ip -ts`). */
  at: number;
  deleted: boolean;
  name: string;
  flags: string[];
  master?: string;
}

/**
 * `ip -ts -o monitor link` in a namespace: every RTM_NEWLINK/RTM_DELLINK,
 * time-stamped by `ip` when it read it from the kernel. A 32 MiB receive
 * buffer (capped by net.core.rmem_max); lost notifications are reported
 * (`ip` prints to stderr) so a bench can fall back to a dump.
 */
export class LinkMonitor {
  readonly lines: MonitorLine[] = [];
  overflowed = false;
  private readonly child: ChildProcess;
  private readonly listeners = new Set<(line: MonitorLine) => void>();
  private stderr = '';

  private constructor(ipBinary: string, ns: string) {
    this.child = spawn(ipBinary, ['-n', ns, '-ts', '-o', '-rcvbuf', String(32 * 1024 * 1024), 'monitor', 'link'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, TZ: 'UTC' },
    });
    trackHelper(this.child);
    createInterface({ input: this.child.stdout!, crlfDelay: Infinity }).on('line', (text) => {
      const line = parseMonitorLine(text);
      if (!line) return;
      this.lines.push(line);
      for (const listener of this.listeners) listener(line);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      this.stderr += chunk;
      if (/ENOBUFS|No buffer space|receive error/i.test(this.stderr)) this.overflowed = true;
    });
  }

  /** Starts the monitor and waits until it demonstrably listens (it reports a no-op change of lo). */
  static async start(dc: DataCentre, ns: string): Promise<LinkMonitor> {
    const monitor = new LinkMonitor(findIp(), ns);
    const deadline = now() + 5_000;
    while (now() < deadline) {
      // An `ip link set lo up` on an up device sends no notification; toggling
      // the alias of lo does, without disturbing anything.
      await dc.exec(ns, ['ip', 'link', 'set', 'dev', 'lo', 'alias', `bench-${Math.round(now())}`]);
      await sleep(50);
      if (monitor.lines.some((l) => l.name === 'lo')) {
        monitor.lines.length = 0;
        return monitor;
      }
    }
    monitor.stop();
    throw new Error(`ip monitor in ${ns} did not start: ${monitor.stderr}`);
  }

  onLine(listener: (line: MonitorLine) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get errors(): string {
    return this.stderr.trim();
  }

  stop(): void {
    if (this.child.pid !== undefined && this.child.exitCode === null) {
      try {
        process.kill(this.child.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
}

const MONITOR_LINE = /^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?\]\s+(Deleted\s+)?\d+:\s+([^:@\s]+)(?:@\S+)?:\s+<([^>]*)>(.*)$/;

export function parseMonitorLine(text: string): MonitorLine | undefined {
  const m = MONITOR_LINE.exec(text);
  if (!m) return undefined;
  const micro = m[2] ? Number(m[2].padEnd(6, '0').slice(0, 6)) : 0;
  const master = / master (\S+)/.exec(m[6]!)?.[1];
  return {
    at: Date.parse(`${m[1]}Z`) + micro / 1000,
    deleted: Boolean(m[3]),
    name: m[4]!,
    flags: m[5]!.split(','),
    ...(master ? { master } : {}),
  };
}

/**
 * Tracks, from monitor lines, when each network was first seen with the
 * bridge up and the vxlan up and enslaved to it.
 */
export class UpTracker {
  readonly bridgeUp = new Map<string, number>();
  readonly vxlanUp = new Map<string, number>();
  readonly bothUp = new Map<string, number>();
  private readonly byDevice = new Map<string, { hex: string; role: 'bridge' | 'vxlan' }>();
  private waiters: Array<{ count: number; resolve: () => void }> = [];

  constructor(nets: BenchNetwork[]) {
    for (const net of nets) {
      this.byDevice.set(net.bridge, { hex: net.hex, role: 'bridge' });
      this.byDevice.set(net.vxlan, { hex: net.hex, role: 'vxlan' });
    }
  }

  readonly feed = (line: MonitorLine): void => {
    const dev = this.byDevice.get(line.name);
    if (!dev || line.deleted || !line.flags.includes('UP')) return;
    if (dev.role === 'bridge') {
      if (!this.bridgeUp.has(dev.hex)) this.bridgeUp.set(dev.hex, line.at);
    } else if (line.master === `br${dev.hex}` && !this.vxlanUp.has(dev.hex)) {
      this.vxlanUp.set(dev.hex, line.at);
    }
    if (!this.bothUp.has(dev.hex) && this.bridgeUp.has(dev.hex) && this.vxlanUp.has(dev.hex)) {
      this.bothUp.set(dev.hex, Math.max(this.bridgeUp.get(dev.hex)!, this.vxlanUp.get(dev.hex)!));
      this.waiters = this.waiters.filter((w) => {
        if (this.bothUp.size < w.count) return true;
        w.resolve();
        return false;
      });
    }
  };

  /** Resolves once `count` networks are both up; rejects after `timeoutMs`. */
  waitFor(count: number, timeoutMs: number): Promise<void> {
    if (this.bothUp.size >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${this.bothUp.size} of ${count} networks came up within ${timeoutMs} ms`)), timeoutMs);
      this.waiters.push({
        count,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      });
    });
  }

  lastUp(): number {
    let last = 0;
    for (const at of this.bothUp.values()) last = Math.max(last, at);
    return last;
  }
}

// ------------------------------------------------------------- agent ----

/**
 * dc.startAgent(), or — when VXNETD_BENCH_AGENT names another build's
 * dist/cli/vxnetd.js (e.g. a candidate fix, to compare before and after on
 * the same machine) — that build with the same flags the harness passes.
 * Either way the data centre tracks the process and kills it by PID.
 * VXNETD_BENCH_NODE_OPTIONS is handed to the agent as NODE_OPTIONS (e.g.
 * `--import ./profile-hook.mjs` to profile it); nothing else of the
 * environment is.
 */
const startedAgents = new Set<AgentHandle>();

export async function startAgent(dc: DataCentre, host: string, args: string[] = []): Promise<AgentHandle> {
  const agent = await spawnAgent(dc, host, args);
  startedAgents.add(agent);
  void agent.exited.then(() => startedAgents.delete(agent));
  return agent;
}

async function spawnAgent(dc: DataCentre, host: string, args: string[]): Promise<AgentHandle> {
  const entry = process.env.VXNETD_BENCH_AGENT;
  const env: Record<string, string> = process.env.VXNETD_BENCH_NODE_OPTIONS ? { NODE_OPTIONS: process.env.VXNETD_BENCH_NODE_OPTIONS } : {};
  if (!entry) return dc.startAgent(host, args, env);
  const h = dc.host(host);
  const defaults: Record<string, string> = {
    '--underlay': 'u0',
    '--hostname': host,
    '--etcd-endpoints': dc.etcdEndpoint,
    '--prefix': dc.prefix,
    '--metrics-listen': `[${h.underlayAddress}]:9730`,
  };
  const command = [process.execPath, entry];
  for (const [flag, value] of Object.entries(defaults)) if (!args.includes(flag)) command.push(flag, value);
  command.push(...args);
  const listen = command[command.lastIndexOf('--metrics-listen') + 1]!;
  const tracker = dc as unknown as { track(p: TrackedProcess): void };
  return new AgentProcess({
    ipBinary: findIp(),
    netns: h.ns,
    host,
    command,
    env: { PATH: process.env.PATH, ...env },
    metricsUrl: `http://${listen}`,
    onSpawn: (p) => tracker.track(p),
  });
}

/** Rejects as soon as the agent exits (with its last log lines), for racing against a wait. */
export function whileAlive<T>(agent: AgentHandle, work: Promise<T>): Promise<T> {
  let settled = false;
  const died = agent.exited.then((status) => {
    if (settled) return undefined as never;
    throw new Error(`agent exited (${status.signal ?? `code ${status.code}`}) while the bench waited\n${tail(agent)}`);
  });
  return Promise.race([work.finally(() => (settled = true)), died]);
}

/** Polls /readyz every `intervalMs`; resolves with the wall-clock ms of the first 200. */
export async function waitReadyAt(agent: AgentHandle, timeoutMs: number, intervalMs = 10): Promise<number> {
  const deadline = now() + timeoutMs;
  let exited = false;
  void agent.exited.then(() => (exited = true));
  let last = '';
  while (now() < deadline) {
    if (exited) throw new Error(`agent exited before it was ready\n${tail(agent)}`);
    try {
      const response = await fetch(`${agent.metricsUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
      if (response.status === 200) return now();
      last = `HTTP ${response.status}`;
      await response.arrayBuffer();
    } catch (error) {
      last = (error as Error).message;
    }
    await sleep(intervalMs);
  }
  throw new Error(`agent not ready after ${timeoutMs} ms (${last})\n${tail(agent)}`);
}

export function tail(agent: AgentHandle, count = 10): string {
  return agent
    .logs()
    .slice(-count)
    .map((l) => (l.raw !== undefined ? l.raw : JSON.stringify(l)))
    .join('\n');
}

/** The first log line's pino `time` matching `msg`, or undefined. */
export function logTime(agent: AgentHandle, msg: string | RegExp): number | undefined {
  const line = agent.logs().find((l) => (typeof msg === 'string' ? l.msg === msg : msg.test(l.msg ?? '')));
  return line?.time;
}

export async function scrape(url: string): Promise<{ ms: number; body: string }> {
  const started = now();
  const response = await fetch(url, { headers: { 'accept-encoding': 'identity' }, signal: AbortSignal.timeout(30_000) });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`GET ${url}: HTTP ${response.status}: ${body.slice(0, 200)}`);
  return { ms: now() - started, body };
}

const NETLINK_OPS = ['create', 'change', 'delete', 'get', 'dump'] as const;

/** vxnetd_netlink_requests_total by op, from a /metrics body. */
export function netlinkRequests(body: string): Record<string, number> {
  const samples = parseSamples(body);
  return Object.fromEntries(NETLINK_OPS.map((op) => [op, sumSamples(samples, 'vxnetd_netlink_requests_total', { op })]));
}

// --------------------------------------------------------- /proc, CPU ----

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/** utime and stime from a /proc stat file (a process's or one thread's), in seconds. */
function statTimes(path: string): { user: number; system: number } {
  const stat = readFileSync(path, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  return { user: Number(fields[11]) / CLK_TCK, system: Number(fields[12]) / CLK_TCK };
}

/** utime and stime of a process, in seconds. */
export function cpuTimesOf(pid: number): { user: number; system: number } {
  return statTimes(`/proc/${pid}/stat`);
}

/** utime and stime of a process's main thread and the sum of its other threads (V8's helpers, libuv's pool), in seconds. */
export function threadCpuOf(pid: number): { main: { user: number; system: number }; others: number } {
  let others = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    if (tid === String(pid)) continue;
    const t = statTimes(`/proc/${pid}/task/${tid}/stat`);
    others += t.user + t.system;
  }
  return { main: statTimes(`/proc/${pid}/task/${pid}/stat`), others };
}

/** utime + stime of a process, in seconds. */
export function cpuSeconds(pid: number): number {
  const { user, system } = cpuTimesOf(pid);
  return user + system;
}

/** VmRSS and VmHWM in MiB. */
export function memory(pid: number): { rssMiB: number; hwmMiB: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rssMiB: kb('VmRSS') / 1024, hwmMiB: kb('VmHWM') / 1024 };
}

function cpuTimes(): { idle: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const values = line.split(/\s+/).slice(1).map(Number);
  const idle = values[3]! + values[4]!;
  return { idle, total: values.slice(0, 8).reduce((a, b) => a + b, 0) };
}

let probeFile: string | undefined;

/**
 * Time of 20 trivial rtnetlink changes (alias of `lo`) in one `ip -batch` in
 * `ns`: a few ms when nobody else holds the RTNL lock; much more while, for
 * example, the kernel tears down a namespace with thousands of devices (other
 * tests on the same machine do that).
 */
export async function rtnlProbeMs(ns: string): Promise<number> {
  if (!probeFile) {
    const dir = scratchDir('probe');
    probeFile = writeFile(dir, 'probe', `${Array.from({ length: 20 }, (_, i) => `link set dev lo alias probe${i}`).join('\n')}\nlink set dev lo alias ""\n`);
  }
  return timedRun([findIp(), '-n', ns, '-batch', probeFile], 'rtnl probe');
}

/**
 * Waits until the machine is quiet: ≥ `idlePercent` CPU idle over a 1 s
 * window and the RTNL probe (see rtnlProbeMs) under 40 ms, so that e.g. the
 * kernel still tearing down namespaces with thousands of devices (ours from
 * an earlier bench, or another user's) does not distort the next
 * measurement. Returns what it saw last; warns when it gives up waiting.
 */
export async function quiesce(label: string, ns?: string, opts: { idlePercent?: number; maxMs?: number } = {}): Promise<{ idle: number; probeMs: number }> {
  const idlePercent = opts.idlePercent ?? 90;
  const maxMs = opts.maxMs ?? 90_000;
  const deadline = now() + maxMs;
  let idle = 0;
  let probeMs = 0;
  for (;;) {
    const a = cpuTimes();
    await sleep(1_000);
    const b = cpuTimes();
    idle = (100 * (b.idle - a.idle)) / Math.max(1, b.total - a.total);
    probeMs = ns ? await rtnlProbeMs(ns) : 0;
    if (idle >= idlePercent && probeMs < 40) return { idle, probeMs };
    if (now() > deadline) {
      log(`warning: machine not quiet before ${label} (${idle.toFixed(0)}% idle, rtnl probe ${probeMs.toFixed(0)} ms after ${maxMs / 1000} s); measuring anyway`);
      return { idle, probeMs };
    }
  }
}

/** Other users' vxnetd/etcd/vitest processes (not children of this bench): they share the CPUs and the RTNL lock. */
export function foreignActivity(): string[] {
  const out = spawnSync('ps', ['-eo', 'pid,ppid,args'], { encoding: 'utf8' }).stdout ?? '';
  const mine = new Set<number>([process.pid]);
  const rows = out.split('\n').slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f.length >= 3);
  // Ancestors (tsx, npx, run-all) are ours too.
  const parentOf = new Map(rows.map(([pid, ppid]) => [Number(pid), Number(ppid)]));
  for (let pid = process.ppid; pid > 1 && !mine.has(pid); pid = parentOf.get(pid) ?? 1) mine.add(pid);
  // Descendants of this process are ours.
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of rows) {
      if (mine.has(Number(ppid)) && !mine.has(Number(pid))) {
        mine.add(Number(pid));
        grew = true;
      }
    }
  }
  return rows
    .filter(([pid, , ...cmd]) => !mine.has(Number(pid)) && /vxnetd\.js|vitest|\/etcd |prometheus-node-exporter|bench\//.test(cmd.join(' ')))
    .map(([pid, , ...cmd]) => `${pid} ${cmd.join(' ').slice(0, 100)}`);
}

// -------------------------------------------------------------- output ----

export function log(message: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 23)}] ${message}\n`);
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export function table(header: string[], rows: Array<Array<string | number>>): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  // Right-align columns whose cells all start with a number (or are empty / a dash).
  const numeric = header.map((_, i) => i > 0 && rows.every((r) => /^([-+]?[\d.]+|—|)(\s|$|[×%])/.test(String(r[i] ?? ''))));
  const line = (r: string[]) => `| ${r.map((c, i) => (numeric[i] ? (c ?? '').padStart(widths[i]!) : (c ?? '').padEnd(widths[i]!))).join(' | ')} |`;
  return [line(header), `|${widths.map((w, i) => (numeric[i] ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

export const fmt = {
  s: (ms: number) => (ms / 1000).toFixed(2),
  ms: (ms: number) => ms.toFixed(1),
  x: (ratio: number) => `${ratio.toFixed(2)}×`,
};

export function machine(): Record<string, string | number> {
  const version = (argv: string[]) => {
    const r = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
    return (r.stdout || r.stderr || '').split('\n')[0]!.trim();
  };
  const git = (gitArgs: string[]) => spawnSync('git', ['-C', REPO_ROOT, ...gitArgs], { encoding: 'utf8' }).stdout?.trim() ?? '';
  const srcChanges = git(['status', '--porcelain', '--', 'src']).split('\n').filter(Boolean).length;
  return {
    date: new Date().toISOString(),
    commit: `${git(['rev-parse', '--short', 'HEAD']) || 'unknown'}${srcChanges ? ` + ${srcChanges} uncommitted change(s) in src/` : ''}`,
    agent: process.env.VXNETD_BENCH_AGENT ?? 'dist/cli/vxnetd.js',
    host: hostname(),
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(totalmem() / 2 ** 30),
    kernel: version(['uname', '-r']),
    node: process.version,
    iproute2: /iproute2-[\w.]+/.exec(version([findIp(), '-V']))?.[0] ?? 'iproute2 ?',
    etcd: `etcd ${/\d+\.\d+\.\d+/.exec(version(['etcd', '--version']))?.[0] ?? '?'}`,
  };
}

let ipPath: string | undefined;
export function findIp(): string {
  for (const candidate of ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip']) {
    try {
      readFileSync(candidate);
      return (ipPath ??= candidate);
    } catch {
      // next
    }
  }
  return 'ip';
}

/** Appends one JSON line per bench to $VXNETD_BENCH_JSON (run-all collects them into a summary). */
export function record(bench: string, result: Record<string, unknown>): void {
  const path = process.env.VXNETD_BENCH_JSON;
  if (path) appendFileSync(path, `${JSON.stringify({ bench, machine: machine(), ...result })}\n`);
}

/**
 * Runs a bench body with a fresh data centre and destroys it afterwards,
 * whatever happens; the exit code says whether the body threw.
 */
export async function withDataCentre(hosts: string[], body: (dc: DataCentre) => Promise<void>, options: { etcdMembers?: number } = {}): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run the benches as root (they create network namespaces)');
  if (!existsSyncSafe(join(REPO_ROOT, 'dist/cli/vxnetd.js'))) throw new Error('vxnetd is not built: run `npm run build` first');
  let dc: DataCentre | undefined;
  // The private etcd keeps its data under $TMPDIR. On a busy disk its fsyncs
  // stalled puts for 13-26 s now and then, which measured the disk, not
  // vxnetd: use tmpfs unless told otherwise (the etcd round trip is still
  // reported separately where it matters).
  if (!process.env.VXNETD_BENCH_ETCD_ON_DISK && existsSyncSafeDir('/dev/shm')) process.env.TMPDIR = '/dev/shm';
  try {
    dc = await DataCentre.create({ hosts, ...options });
    await body(dc);
  } finally {
    killHelpersSync();
    if (dc) {
      log(`cleaning up data centre ${dc.id}`);
      // Host namespaces first, and wait until the kernel has torn their
      // devices down (it holds the RTNL lock meanwhile, ~8 ms per device):
      // otherwise the harness's own `ip link del` waits behind it and times
      // out, and the next bench would start on a busy kernel.
      await stopAgents();
      let hostsDeleted = false;
      for (const host of dc.hosts()) {
        try {
          run([findIp(), 'netns', 'del', host.ns], `delete ${host.ns}`);
          hostsDeleted = true;
        } catch {
          // already gone (discardHost) or never made
        }
      }
      if (hostsDeleted) await quiesce('teardown', dc.fabricNs, { idlePercent: 0, maxMs: 300_000 });
      await dc.destroy();
    }
  }
}

/** Stops every agent this bench started (by PID, SIGKILL after 6 s), before their namespaces go. */
async function stopAgents(): Promise<void> {
  await Promise.all([...startedAgents].map((agent) => agent.stop().catch(() => undefined)));
  startedAgents.clear();
}

function existsSyncSafeDir(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

function existsSyncSafe(path: string): boolean {
  try {
    readFileSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Entry-point wrapper: prints the error and exits 1 after cleanup. */
export function main(body: () => Promise<void>): void {
  body().then(
    () => process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0),
    (error: Error) => {
      process.stderr.write(`\nbench failed: ${error.stack ?? error.message}\n`);
      process.exit(1);
    },
  );
}

/**
 * Brings an agent to `nets` converged networks. chunk = 0: all keys are put
 * before the agent starts (the realistic start-up). chunk > 0: the agent
 * starts first and the keys are put `chunk` at a time, each chunk checked
 * converged before the next: a way to reach N networks when a start-up over
 * N networks fails (the output says which was used).
 */
export async function startConverged(
  dc: DataCentre,
  host: string,
  nets: BenchNetwork[],
  opts: { chunk: number; agentArgs: string[]; timeoutMs?: number },
): Promise<AgentHandle> {
  const ns = dc.host(host).ns;
  const timeoutMs = opts.timeoutMs ?? 300_000;
  if (opts.chunk <= 0) {
    await putNetworks(dc, nets);
    const agent = await startAgent(dc, host, opts.agentArgs);
    await waitReadyAt(agent, timeoutMs);
    await assertConverged(dc, ns, nets, `agent started over ${nets.length} networks`);
    return agent;
  }
  const agent = await startAgent(dc, host, opts.agentArgs);
  await waitReadyAt(agent, 30_000);
  for (let i = 0; i < nets.length; i += opts.chunk) {
    const chunk = nets.slice(i, i + opts.chunk);
    await putNetworks(dc, chunk);
    const deadline = now() + timeoutMs;
    for (;;) {
      if (missingNetworks(await links(dc, ns), chunk).length === 0) break;
      if (now() > deadline) throw new Error(`networks ${chunk[0]!.hex}… not converged within ${timeoutMs} ms\n${tail(agent)}`);
      await sleep(200);
    }
  }
  return agent;
}
