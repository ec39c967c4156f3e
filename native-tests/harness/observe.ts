/**
 * Small observation helpers for the resilience tests: Prometheus samples,
 * managed-link snapshots, timing, bulk etcd writes and an `ip monitor link`
 * recorder. Nothing here changes how DataCentre behaves.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { parseOwnerAlias } from '../../src/model/identity.js';
import type { AgentHandle, DataCentre } from './datacentre.js';
import { sleep, waitFor } from './wait.js';

/** Sample lines of an exposition: series (name{labels}) → value. */
export function parseSamples(body: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const space = line.lastIndexOf(' ');
    out.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return out;
}

export async function scrape(agent: Pick<AgentHandle, 'metricsUrl'>, timeoutMs = 5_000): Promise<Map<string, number>> {
  const response = await fetch(`${agent.metricsUrl}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await response.text();
  if (response.status !== 200) throw new Error(`GET /metrics: HTTP ${response.status}: ${body.slice(0, 300)}`);
  return parseSamples(body);
}

/** Sum of every series of `name` whose labels include `labels` (0 when there is none). */
export function sumSamples(samples: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const [series, value] of samples) {
    const brace = series.indexOf('{');
    const seriesName = brace < 0 ? series : series.slice(0, brace);
    if (seriesName !== name) continue;
    const text = brace < 0 ? '' : series.slice(brace);
    if (Object.entries(labels).every(([k, v]) => text.includes(`${k}="${v}"`))) total += value;
  }
  return total;
}

export interface MutatingRequests {
  create: number;
  change: number;
  delete: number;
}

/** vxnetd_netlink_requests_total for the mutating ops, summed over every result. */
export function mutatingRequests(samples: Map<string, number>): MutatingRequests {
  const count = (op: string) => sumSamples(samples, 'vxnetd_netlink_requests_total', { op });
  return { create: count('create'), change: count('change'), delete: count('delete') };
}

/** GET path on the agent's HTTP server: status code, or 0 when it does not answer. */
export async function httpStatus(agent: Pick<AgentHandle, 'metricsUrl'>, path: string, timeoutMs = 1_000): Promise<number> {
  try {
    const response = await fetch(`${agent.metricsUrl}${path}`, { signal: AbortSignal.timeout(timeoutMs) });
    await response.text();
    return response.status;
  } catch {
    return 0;
  }
}

const MANAGED_NAME = /^(vxlan|br)[0-9a-f]{1,6}$/;

/** Links of `ns` whose names look like vxnetd's (br<hex>, vxlan<hex>), by name (`ip -d -j link show`). */
export async function managedLinks(dc: DataCentre, ns: string): Promise<Map<string, any>> {
  const links = await dc.links(ns);
  return new Map(links.filter((l) => MANAGED_NAME.test(l.ifname)).map((l) => [l.ifname as string, l]));
}

/** name → ifindex of the managed-looking links. */
export async function ifindexes(dc: DataCentre, ns: string): Promise<Map<string, number>> {
  const links = await managedLinks(dc, ns);
  return new Map([...links].map(([name, l]) => [name, l.ifindex as number]));
}

/** An alias vxnetd gives the devices of network `hex`: with its identity and the network's incarnation (src/model/identity.ts), optionally of `host`. */
export function isAgentAlias(alias: unknown, hex: string, host?: string): boolean {
  const owner = typeof alias === 'string' ? parseOwnerAlias(alias) : undefined;
  return owner?.hex === hex && owner.identity !== undefined && (host === undefined || owner.identity.startsWith(`host=${host} `));
}

/** True when a pair looks converged: both present, up, vxlan enslaved to the bridge, alias, MTU and addrgenmode none as expected. */
export function pairConverged(links: Map<string, any>, hex: string, mtu: number): boolean {
  const vxlan = links.get(`vxlan${hex}`);
  const bridge = links.get(`br${hex}`);
  if (!vxlan || !bridge) return false;
  const up = (l: any) => Array.isArray(l.flags) && l.flags.includes('UP');
  return (
    up(vxlan) &&
    up(bridge) &&
    vxlan.master === `br${hex}` &&
    vxlan.mtu === mtu &&
    bridge.mtu === mtu &&
    isAgentAlias(vxlan.ifalias, hex) &&
    isAgentAlias(bridge.ifalias, hex) &&
    // Only a device with IPv6 state (MTU 1280 or more) has a mode to show.
    (mtu < 1280 || (vxlan.inet6_addr_gen_mode === 'none' && bridge.inet6_addr_gen_mode === 'none'))
  );
}

/** Milliseconds from now until `fn` yields a truthy value (polling as fast as `intervalMs`). */
export async function elapsedUntil(fn: () => Promise<unknown>, what: string, timeoutMs = 10_000, intervalMs = 10): Promise<number> {
  const started = performance.now();
  await waitFor(async () => (await fn()) || undefined, what, timeoutMs, intervalMs);
  return performance.now() - started;
}

/** Puts key/value pairs with as few transactions as etcd allows (its default --max-txn-ops is 128). */
export async function putInTxns(etcd: Etcd3, entries: Array<[string, string | Buffer]>, perTxn = 125): Promise<void> {
  const batches: Array<Array<[string, string | Buffer]>> = [];
  for (let i = 0; i < entries.length; i += perTxn) batches.push(entries.slice(i, i + perTxn));
  await Promise.all(
    batches.map((batch) =>
      etcd.kv.txn({ success: batch.map(([key, value]) => ({ request_put: { key: Buffer.from(key), value: Buffer.from(value) } })) }),
    ),
  );
}

/** Deletes the keys with as few transactions as etcd allows. */
export async function deleteInTxns(etcd: Etcd3, keys: string[], perTxn = 125): Promise<void> {
  const batches: string[][] = [];
  for (let i = 0; i < keys.length; i += perTxn) batches.push(keys.slice(i, i + perTxn));
  await Promise.all(batches.map((batch) => etcd.kv.txn({ success: batch.map((key) => ({ request_delete_range: { key: Buffer.from(key) } })) })));
}

let probeCounter = 0;

/**
 * Records `ip -ts monitor link` in a namespace. start() returns once the
 * monitor has provably seen a probe (a bridge `vxmonN` added and deleted);
 * stop() makes a second probe, waits for it, and returns the event blocks
 * seen in between (probe events excluded). The monitor process is run through
 * DataCentre.exec, bounded by `maxSeconds`, so destroy() reaps it.
 */
export class LinkMonitor {
  private constructor(
    private readonly dc: DataCentre,
    private readonly ns: string,
    private readonly dir: string,
    private readonly file: string,
    private readonly startProbe: string,
    readonly done: Promise<unknown>,
  ) {}

  static async start(dc: DataCentre, ns: string, maxSeconds = 60): Promise<LinkMonitor> {
    const dir = mkdtempSync(join(tmpdir(), 'vxnetd-monitor-'));
    const file = join(dir, 'monitor.txt');
    const script = 'exec timeout "$1" stdbuf -oL ip -ts monitor link > "$0" 2>&1';
    const done = dc.exec(ns, ['sh', '-c', script, file, String(maxSeconds)], { timeoutMs: (maxSeconds + 5) * 1_000 });
    const probe = `vxmon${++probeCounter}`;
    const monitor = new LinkMonitor(dc, ns, dir, file, probe, done);
    // The monitor needs a moment to subscribe: probe until it reports one.
    await waitFor(
      async () => {
        await monitor.probe(probe);
        await sleep(50);
        return monitor.read().includes(` ${probe}:`);
      },
      `ip monitor in ${ns} to start`,
      10_000,
      100,
    );
    return monitor;
  }

  /** Event blocks (first line plus its continuation lines) between the start and the stop probe. */
  async stop(): Promise<string[]> {
    const probe = `vxmon${++probeCounter}`;
    await this.probe(probe);
    await waitFor(async () => this.read().includes(` ${probe}:`), `ip monitor in ${this.ns} to see the stop probe`, 10_000, 50);
    const blocks: string[] = [];
    for (const line of this.read().split('\n')) {
      if (line.startsWith('[')) blocks.push(line);
      else if (blocks.length && line.trim()) blocks[blocks.length - 1] += `\n${line}`;
    }
    rmSync(this.dir, { recursive: true, force: true });
    const lastStart = findLastIndex(blocks, (b) => b.includes(` ${this.startProbe}:`));
    const firstStop = blocks.findIndex((b) => b.includes(` ${probe}:`));
    return blocks.slice(lastStart + 1, firstStop).filter((b) => !/ vxmon\d+:/.test(b));
  }

  private read(): string {
    try {
      return readFileSync(this.file, 'utf8');
    } catch {
      return '';
    }
  }

  private async probe(name: string): Promise<void> {
    await this.dc.exec(this.ns, ['ip', 'link', 'add', 'name', name, 'type', 'bridge']);
    await this.dc.exec(this.ns, ['ip', 'link', 'del', name]);
  }
}

function findLastIndex<T>(items: T[], pred: (item: T) => boolean): number {
  for (let i = items.length - 1; i >= 0; i--) if (pred(items[i]!)) return i;
  return -1;
}

/** Event blocks that concern a device with a vxnetd name (br<hex> / vxlan<hex>). */
export function managedEvents(blocks: string[]): string[] {
  return blocks.filter((b) => /(?:^|\s)(?:Deleted )?\d+: (?:vxlan|br)[0-9a-f]{1,6}[:@]/.test(b.split('\n')[0]!));
}

/** The status vxnetd on `host` wrote for network `hex`, parsed, or undefined. */
export async function readStatus(etcd: Etcd3, host: string, hex: string, prefix = '/v1'): Promise<any | undefined> {
  const value = await etcd.get(`${prefix}/hosts/${host}/status/${hex}`).string();
  return value ? JSON.parse(value) : undefined;
}
