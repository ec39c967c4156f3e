/**
 * vxnetd's Prometheus metrics (DESIGN.md §4).
 *
 * Two parts, concatenated by render():
 * - agent metrics in a non-global prom-client Registry (gauges read from the
 *   agent at scrape time, reconcile histogram, request and error counters,
 *   build info, prom-client's default process metrics);
 * - per-interface families of the managed devices, computed at scrape time
 *   from ONE RTM_GETLINK dump with stats and rendered by ./netdev.ts, because
 *   prom-client's per-label-set cost dominates at thousands of devices.
 *
 * Consequence: `registry.metrics()` alone holds only the agent metrics; the
 * HTTP handler must serve render().
 */
import { Counter, Gauge, Histogram, Registry as PromRegistry, collectDefaultMetrics, type Registry } from 'prom-client';
import type { Kernel } from '../kernel/rtnl.js';
import { renderNetdev } from './netdev.js';

export interface AgentGauges {
  networksDesired(): number;
  networksReady(): number;
  networksError(): number;
  /** Devices with a vxnetd alias this agent must not touch (another identity, or vxnetd 0.1's and not wanted here). */
  devicesLeftAlone?(): number;
  /** Unicast flooding: per network, the other hosts its vxlan floods to (none in multicast mode). */
  floodPeers?(): Array<{ hex: string; peers: number }>;
  /** Routers: prefixes radvd advertises (withdrawals included), and how often radvd was started again after dying. */
  prefixesAdvertised?(): number;
  radvdRestarts?(): number;
  etcdConnected(): boolean;
  watchRevision(): number;
}

export interface RenderResult {
  status: number;
  contentType: string;
  body: string;
}

export interface Metrics {
  /** Non-global registry holding the agent metrics (not the per-interface families: see render()). */
  readonly registry: Registry;
  /** vxnetd_reconcile_duration_seconds */
  observeReconcile(seconds: number): void;
  /** vxnetd_netlink_requests_total{op,result} */
  countNetlinkRequest(op: string, result: string): void;
  /** vxnetd_spec_errors_total{reason} */
  countSpecError(reason: string): void;
  /**
   * The whole exposition: 200 with the Prometheus text format, or 503 with a
   * one-line plain-text reason (e.g. the netlink dump failed). Never throws;
   * a failed scrape does not affect the next one.
   */
  render(): Promise<RenderResult>;
}

export interface MetricsOptions {
  kernel: Pick<Kernel, 'dumpLinks'>;
  gauges: AgentGauges;
  version: string;
}

/** 1 ms … 10 s: a no-op reconcile is ~1 ms, a full resync of thousands of networks takes seconds. */
export const RECONCILE_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** prom-client's event-loop delay sampling period (its eventLoopMonitoringPrecision). */
export const EVENT_LOOP_SAMPLE_MS = 100;

const TEXT_CONTENT_TYPE = PromRegistry.PROMETHEUS_CONTENT_TYPE;
const ERROR_CONTENT_TYPE = 'text/plain; charset=utf-8';

function oneLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/\s*\n\s*/g, ' ').trim() || 'unknown error';
}

export function createMetrics(opts: MetricsOptions): Metrics {
  const { kernel, gauges, version } = opts;
  const registry = new PromRegistry();
  const registers = [registry];

  // prom-client's default 10 ms event-loop sampling was most of an idle agent's CPU (bench/RESULTS.md,
  // "2026-11-30, late"); at 100 ms a stall long enough to delay a repair still shows.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });

  new Gauge({
    name: 'vxnetd_build_info',
    help: 'Always 1; labels give the vxnetd version and the Node.js version running it.',
    labelNames: ['version', 'nodejs_version'] as const,
    registers,
  }).set({ version, nodejs_version: process.version }, 1);

  const agentGauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });
  agentGauge(
    'vxnetd_networks_desired',
    'Networks this host should realise according to etcd (scope applied), as known to the agent at scrape time.',
    () => gauges.networksDesired(),
  );
  agentGauge(
    'vxnetd_networks_ready',
    'Networks whose vxlan and bridge are in place and up (last reported status "ready"), at scrape time.',
    () => gauges.networksReady(),
  );
  agentGauge(
    'vxnetd_networks_error',
    'Networks in status "error" (spec error, name conflict with a foreign device, kernel refusal), at scrape time.',
    () => gauges.networksError(),
  );
  agentGauge(
    'vxnetd_devices_left_alone',
    'Devices carrying a vxnetd alias of another identity (host name, prefix or etcd cluster), or of vxnetd 0.1 for a network this agent does not want: never changed, see the log for each.',
    () => gauges.devicesLeftAlone?.() ?? 0,
  );
  agentGauge(
    'vxnetd_etcd_connected',
    '1 while the agent has a working connection and watch to etcd, else 0.',
    () => (gauges.etcdConnected() ? 1 : 0),
  );
  agentGauge(
    'vxnetd_etcd_watch_revision',
    'Last etcd revision the agent has seen on its watch (or listed); stops moving when the watch is stuck.',
    () => gauges.watchRevision(),
  );

  new Gauge({
    name: 'vxnetd_network_flood_peers',
    help: 'Unicast flooding: the other hosts a network\'s vxlan floods broadcast and unknown traffic to (one all-zeros forwarding entry each), as last set. Absent in multicast mode.',
    labelNames: ['device', 'vni'] as const,
    registers,
    collect() {
      this.reset();
      for (const { hex, peers } of gauges.floodPeers?.() ?? []) this.set({ device: `vxlan${hex}`, vni: hex }, peers);
    },
  });

  if (gauges.prefixesAdvertised) {
    agentGauge('vxnetd_router_prefixes_advertised', 'Routers: IPv6 prefixes radvd advertises on tenant bridges (a withdrawn one, with zero lifetimes, until it is dropped).', () => gauges.prefixesAdvertised!());
  }
  if (gauges.radvdRestarts) {
    new Counter({
      name: 'vxnetd_radvd_restarts_total',
      help: 'Routers: times radvd was found dead and started again.',
      registers,
      collect() {
        this.reset();
        this.inc(gauges.radvdRestarts!());
      },
    });
  }

  const reconcile = new Histogram({
    name: 'vxnetd_reconcile_duration_seconds',
    help: 'Time to reconcile one network (plan and apply its netlink operations), in seconds.',
    buckets: RECONCILE_BUCKETS,
    registers,
  });
  const netlinkRequests = new Counter({
    name: 'vxnetd_netlink_requests_total',
    help: 'rtnetlink requests sent by the agent, by operation and result ("ok" or the errno name, e.g. EEXIST).',
    labelNames: ['op', 'result'] as const,
    registers,
  });
  const specErrors = new Counter({
    name: 'vxnetd_spec_errors_total',
    help: 'Network specs from etcd that were refused, by reason (e.g. mtu, type, json, group).',
    labelNames: ['reason'] as const,
    registers,
  });

  // One dump per render; renders are shared (below), so scrapes that arrive together share it.
  // Through then(): a dumpLinks() that throws at once becomes a rejection like any other.
  const render = async (): Promise<RenderResult> => {
    const dump = Promise.resolve().then(() => kernel.dumpLinks({ stats: true })).then(
      (links) => ({ ok: true as const, links }),
      (error: unknown) => ({ ok: false as const, error }),
    );
    let agentText: string;
    try {
      agentText = await registry.metrics();
    } catch (error) {
      await dump;
      return { status: 503, contentType: ERROR_CONTENT_TYPE, body: `collecting agent metrics failed: ${oneLine(error)}\n` };
    }
    const result = await dump;
    if (!result.ok) {
      return {
        status: 503,
        contentType: ERROR_CONTENT_TYPE,
        body: `netlink link dump (RTM_GETLINK with stats) failed: ${oneLine(result.error)}\n`,
      };
    }
    try {
      return { status: 200, contentType: TEXT_CONTENT_TYPE, body: `${agentText}\n${renderNetdev(result.links)}` };
    } catch (error) {
      return { status: 503, contentType: ERROR_CONTENT_TYPE, body: `rendering interface metrics failed: ${oneLine(error)}\n` };
    }
  };

  let renderInFlight: Promise<RenderResult> | undefined;

  // One counter child per (op, result): inc() with a label object hashes the labels on every
  // call, and a bulk apply counts ~6 requests per network.
  const requestCounters = new Map<string, { inc(): void }>();
  const countNetlinkRequest = (op: string, result: string) => {
    const key = `${op}\0${result}`;
    let counter = requestCounters.get(key);
    if (!counter) {
      counter = netlinkRequests.labels({ op, result });
      requestCounters.set(key, counter);
    }
    counter.inc();
  };

  return {
    registry,
    observeReconcile: (seconds) => reconcile.observe(seconds),
    countNetlinkRequest,
    countSpecError: (reason) => specErrors.inc({ reason }),
    // Scrapes that arrive while one renders get its result: however many scrapers there are, at
    // most one dump and one render run at a time, so they cannot crowd out drift repair.
    render: () => {
      renderInFlight ??= render()
        .catch((error: unknown): RenderResult => ({ status: 503, contentType: ERROR_CONTENT_TYPE, body: `scrape failed: ${oneLine(error)}\n` }))
        .finally(() => (renderInFlight = undefined));
      return renderInFlight;
    },
  };
}
