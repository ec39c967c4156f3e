/**
 * /metrics with 2,000 managed devices: vxnetd's render() against Debian's
 * prometheus-node-exporter (netdev collector only) on the same devices.
 *
 *   sudo npx tsx bench/metrics-scrape.ts [--networks 1000] [--scrapes 50]
 *
 * Needs root, iproute2 and prometheus-node-exporter
 * (apt-get install -y prometheus-node-exporter).
 *
 * The parent builds a fresh network namespace with 1,000 bridge+vxlan pairs
 * (`ip -batch`, aliases `vxnetd:<hex>`, vxlans over a veth underlay `u0`),
 * starts node_exporter inside it, and runs the measuring part as a child
 * process inside the namespace (`ip netns exec`; Node cannot setns). The
 * namespace and node_exporter are removed/killed by PID even on failure or
 * Ctrl-C.
 *
 * Measured per scrape, interleaved so that drift hits every column alike:
 * - render(): the in-process scrape the agent's HTTP handler serves (one
 *   RTM_GETLINK dump with stats + agent registry + text rendering);
 * - vxnetd over HTTP: render() behind a minimal node:http server in its own
 *   process in the namespace, fetched like node_exporter (what Prometheus sees);
 * - dumpLinks(): the netlink dump alone, to show where the time goes;
 * - node_exporter: GET /metrics over loopback.
 * Both HTTP clients ask for an uncompressed body (identity) so neither side
 * pays for gzip.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const THIS_FILE = fileURLToPath(import.meta.url);
const NODE_EXPORTER = '/usr/bin/prometheus-node-exporter';
const NODE_EXPORTER_PORT = 9100;
const VXNETD_PORT = 9730;
/** VNIs 0x100001…: names vxlan100001 / br100001, groups ff05::10:1… (clear of IANA's well-known ones). */
const VNI_BASE = 0x100000;

interface Args {
  child: boolean;
  serve: boolean;
  networks: number;
  scrapes: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { child: false, serve: false, networks: 1000, scrapes: 50 };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const next = () => {
      const value = Number(argv[++i]);
      if (!Number.isInteger(value) || value < 1) throw new Error(`${arg} needs a positive integer`);
      return value;
    };
    if (arg === '--child') args.child = true;
    else if (arg === '--serve') args.serve = true;
    else if (arg === '--networks') args.networks = next();
    else if (arg === '--scrapes') args.scrapes = next();
    else throw new Error(`unknown argument ${arg} (use --networks N, --scrapes N)`);
  }
  return args;
}

interface Timings {
  render: number[];
  vxnetdHttp: number[];
  dump: number[];
  nodeExporter: number[];
  vxnetdBytes: number;
  nodeExporterBytes: number;
  vxnetdDevices: number;
  nodeExporterDevices: number;
  linksInDump: number;
}

// ---------------------------------------------------------------- child ----

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const start = performance.now();
  const value = await fn();
  return [performance.now() - start, value];
}

async function get(url: string): Promise<string> {
  const response = await fetch(url, { headers: { 'accept-encoding': 'identity' } });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`GET ${url}: HTTP ${response.status}: ${body.slice(0, 200)}`);
  return body;
}

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await get(url);
      return;
    } catch (error) {
      if (Date.now() > deadline) throw new Error(`${url} did not answer within ${timeoutMs} ms: ${(error as Error).message}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

const count = (body: string, prefix: string) => body.split('\n').filter((line) => line.startsWith(prefix)).length;

async function createBenchMetrics(args: Args) {
  // Imported lazily so that the parent, outside the namespace, never loads
  // the native netlink binding.
  const { NetlinkKernel } = await import('../src/kernel/rtnl.js');
  const { createMetrics } = await import('../src/metrics/metrics.js');
  const kernel = new NetlinkKernel();
  const metrics = createMetrics({
    kernel,
    version: 'bench',
    gauges: {
      networksDesired: () => args.networks,
      networksReady: () => args.networks,
      networksError: () => 0,
      etcdConnected: () => true,
      watchRevision: () => 1,
    },
  });
  return { kernel, metrics };
}

/** `--serve`: render() behind a minimal HTTP server, as the agent will serve it. */
async function runServer(args: Args): Promise<void> {
  const { metrics } = await createBenchMetrics(args);
  const server: Server = createServer((req, res) => {
    void metrics.render().then((r) => {
      res.writeHead(r.status, { 'content-type': r.contentType });
      res.end(r.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(VXNETD_PORT, '127.0.0.1', resolve));
  // Runs until the parent kills it by PID.
}

async function runChild(args: Args): Promise<void> {
  const { kernel, metrics } = await createBenchMetrics(args);
  const vxnetdUrl = `http://127.0.0.1:${VXNETD_PORT}/metrics`;
  const nodeExporterUrl = `http://127.0.0.1:${NODE_EXPORTER_PORT}/metrics`;
  await waitForHttp(nodeExporterUrl, 10_000);
  await waitForHttp(vxnetdUrl, 10_000);

  const t: Timings = {
    render: [],
    vxnetdHttp: [],
    dump: [],
    nodeExporter: [],
    vxnetdBytes: 0,
    nodeExporterBytes: 0,
    vxnetdDevices: 0,
    nodeExporterDevices: 0,
    linksInDump: 0,
  };
  const warmUp = 5;
  for (let i = 0; i < warmUp + args.scrapes; i++) {
    const record = i >= warmUp;
    const [renderMs, result] = await timed(() => metrics.render());
    if (result.status !== 200) throw new Error(`render() answered ${result.status}: ${result.body}`);
    const [httpMs, body] = await timed(() => get(vxnetdUrl));
    const [dumpMs, links] = await timed(() => kernel.dumpLinks({ stats: true }));
    const [neMs, neBody] = await timed(() => get(nodeExporterUrl));
    if (!record) continue;
    t.render.push(renderMs);
    t.vxnetdHttp.push(httpMs);
    t.dump.push(dumpMs);
    t.nodeExporter.push(neMs);
    t.vxnetdBytes = body.length;
    t.nodeExporterBytes = neBody.length;
    t.vxnetdDevices = count(body, 'vxnetd_network_info{');
    t.nodeExporterDevices = count(neBody, 'node_network_receive_bytes_total{');
    t.linksInDump = links.length;
  }
  await kernel.close();
  // Exit at once: idle keep-alive connections would hold the process for seconds.
  process.stdout.write(`${JSON.stringify(t)}\n`, () => process.exit(0));
}

// --------------------------------------------------------------- parent ----

function run(argv: string[], what: string): void {
  const result = spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8' });
  if (result.status !== 0) {
    throw new Error(`${what}: \`${argv.join(' ')}\` failed (${result.status ?? result.signal}): ${(result.stderr || result.stdout).trim().slice(0, 1000)}`);
  }
}

function groupFor(vni: number): string {
  const high = vni >>> 16;
  const low = vni & 0xffff;
  return high ? `ff05::${high.toString(16)}:${low.toString(16)}` : `ff05::${low.toString(16)}`;
}

function batchScript(networks: number): string {
  const lines = ['link set lo up', 'link add name u0 type veth peer name u0p', 'link set dev u0 up', 'link set dev u0p up'];
  for (let i = 1; i <= networks; i++) {
    const vni = VNI_BASE + i;
    const h = vni.toString(16);
    // `name` is needed: some hex names (brd…) are ip keywords otherwise.
    lines.push(`link add name br${h} type bridge`);
    lines.push(`link set dev br${h} alias vxnetd:${h} up`);
    lines.push(`link add name vxlan${h} type vxlan id ${vni} group ${groupFor(vni)} dev u0 dstport 4789 ttl 5`);
    lines.push(`link set dev vxlan${h} alias vxnetd:${h} master br${h} up`);
  }
  return `${lines.join('\n')}\n`;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

function killByPid(child: ChildProcess | undefined): void {
  if (!child?.pid || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

async function runParent(args: Args): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('run as root: the bench creates a network namespace');
  const exporterCheck = spawnSync(NODE_EXPORTER, ['--version'], { encoding: 'utf8' });
  if (exporterCheck.status !== 0) throw new Error(`${NODE_EXPORTER} not usable: apt-get install -y prometheus-node-exporter`);

  const netns = `vxnetd-bench-metrics-${process.pid}`;
  const work = mkdtempSync(join(tmpdir(), 'vxnetd-bench-metrics-'));
  let nodeExporter: ChildProcess | undefined;
  let server: ChildProcess | undefined;
  let measurer: ChildProcess | undefined;
  let netnsCreated = false;
  const cleanup = () => {
    killByPid(measurer);
    killByPid(server);
    killByPid(nodeExporter);
    if (netnsCreated) {
      spawnSync('ip', ['netns', 'del', netns]);
      netnsCreated = false;
    }
    rmSync(work, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals) => {
    cleanup();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('exit', cleanup);

  try {
    run(['ip', 'netns', 'add', netns], 'create the namespace');
    netnsCreated = true;
    const batch = join(work, 'links.batch');
    writeFileSync(batch, batchScript(args.networks));
    const started = performance.now();
    run(['ip', '-n', netns, '-batch', batch], 'create the devices');
    const setupMs = performance.now() - started;
    process.stderr.write(`created ${args.networks * 2} managed devices in ${netns} in ${(setupMs / 1000).toFixed(1)} s\n`);

    // `ip netns exec` execs in place: the PID is node_exporter's own.
    nodeExporter = spawn(
      'ip',
      [
        'netns', 'exec', netns, NODE_EXPORTER,
        '--collector.disable-defaults', '--collector.netdev',
        `--web.listen-address=127.0.0.1:${NODE_EXPORTER_PORT}`,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let exporterLog = '';
    nodeExporter.stderr!.setEncoding('utf8').on('data', (chunk: string) => (exporterLog = (exporterLog + chunk).slice(-4000)));

    const inNetns = (mode: string) => [
      'netns', 'exec', netns, process.execPath, ...process.execArgv, THIS_FILE, mode,
      '--networks', String(args.networks), '--scrapes', String(args.scrapes),
    ];
    server = spawn('ip', inNetns('--serve'), { stdio: ['ignore', 'ignore', 'inherit'] });
    measurer = spawn('ip', inNetns('--child'), { stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    measurer.stdout!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    // A hung measurement must not keep the namespace forever.
    const deadlineMs = 60_000 + args.scrapes * 2_000;
    const watchdog = setTimeout(() => killByPid(measurer), deadlineMs);
    const status = await new Promise<number | null>((resolve) => measurer!.once('exit', (code) => resolve(code)));
    clearTimeout(watchdog);
    if (status !== 0) throw new Error(`measuring child failed (exit ${status}); node_exporter said:\n${exporterLog}`);
    const t = JSON.parse(output.trim().split('\n').pop()!) as Timings;

    const expected = args.networks * 2;
    if (t.vxnetdDevices !== expected) throw new Error(`vxnetd exported ${t.vxnetdDevices} devices, expected ${expected}`);
    if (t.nodeExporterDevices < expected) throw new Error(`node_exporter exported ${t.nodeExporterDevices} devices, expected ≥ ${expected}`);

    const rows: Array<[string, number[], string, boolean]> = [
      ['vxnetd render()', t.render, `${(t.vxnetdBytes / 1024).toFixed(0)} KiB, ${t.vxnetdDevices} devices`, true],
      ['vxnetd over HTTP', t.vxnetdHttp, 'render() behind node:http, own process', true],
      ['  of which dumpLinks()', t.dump, `${t.linksInDump} links, stats on`, false],
      ['node_exporter netdev', t.nodeExporter, `${(t.nodeExporterBytes / 1024).toFixed(0)} KiB, ${t.nodeExporterDevices} devices`, true],
    ];
    const ne50 = percentile(t.nodeExporter, 50);
    const ne95 = percentile(t.nodeExporter, 95);
    console.log(`\n/metrics, ${expected} managed devices (+${t.linksInDump - expected} others), ${args.scrapes} scrapes each, ${process.version}\n`);
    console.log(`${'what'.padEnd(24)}${'p50 ms'.padStart(9)}${'p95 ms'.padStart(9)}${'NE/this p50'.padStart(13)}${'NE/this p95'.padStart(13)}  notes`);
    for (const [name, values, note, compare] of rows) {
      const p50 = percentile(values, 50);
      const p95 = percentile(values, 95);
      const ratio = (ne: number, x: number) => (compare ? `${(ne / x).toFixed(1)}×` : '');
      console.log(
        `${name.padEnd(24)}${p50.toFixed(1).padStart(9)}${p95.toFixed(1).padStart(9)}${ratio(ne50, p50).padStart(13)}${ratio(ne95, p95).padStart(13)}  ${note}`,
      );
    }
    const target = percentile(t.vxnetdHttp, 95) < 100 && percentile(t.vxnetdHttp, 50) < ne50;
    console.log(`\ntarget (DESIGN.md §7: faster than node_exporter and under 100 ms): ${target ? 'met' : 'NOT met'}`);
  } finally {
    cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

const args = parseArgs(process.argv.slice(2));
(args.serve ? runServer(args) : args.child ? runChild(args) : runParent(args)).catch((error: unknown) => {
  process.stderr.write(`metrics-scrape: ${(error as Error).message}\n`);
  process.exit(1);
});
