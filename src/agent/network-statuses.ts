/** The status of every network on this host (DESIGN.md §1): the only owner, and what it hands to etcd. */
import { cutText } from '../model/spec.js';
import { bridgeName, vxlanName } from '../model/vni.js';
import type { IpamReport } from '../model/ipam-availability.js';
import type { NetworkStatus } from '../store/schema.js';

export type { NetworkStatus } from '../store/schema.js';

export interface StatusLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

/** null: the network is gone from this host, remove its status. */
export type StatusWriter = (hex: string, status: NetworkStatus | null) => void;

/**
 * Statuses of a host go to etcd in transactions bounded by etcd's request size: a reason that
 * quoted a 60 KB value would hold back every status of the host. Reasons quote values briefly
 * (model/spec.ts quoteBrief); this is the bound behind that.
 */
export const MAX_REASON_CHARS = 400;

export function boundedReason(reason: string): string {
  return cutText(reason, MAX_REASON_CHARS);
}

/** What the flood entries of a network (unicast flooding) came to: the peers flooded to, or why they could not be set. */
export type FloodPart = { peers: number; problem?: undefined } | { peers?: undefined; problem: string };

interface DevicePart {
  state: NetworkStatus['state'];
  reason?: string;
  specRevision?: number;
  mtu?: number;
}

/**
 * A network's status is its devices' (DevicePairs) and, in unicast mode, its flood entries'
 * (FloodEntries): each kind reports its part, and the status written is both — ready only when
 * both are.
 */
export class NetworkStatuses {
  private readonly statuses = new Map<string, NetworkStatus>();
  private readonly devices = new Map<string, DevicePart>();
  private readonly flooding = new Map<string, FloodPart>();
  /** Routers: what this router says about the network's IPAM entry (served, or why not). */
  private readonly routing = new Map<string, IpamReport>();

  constructor(
    private readonly log: StatusLog,
    private readonly now: () => number,
    private readonly write: StatusWriter,
  ) {}

  get(hex: string): NetworkStatus | undefined {
    return this.statuses.get(hex);
  }

  names(): Iterable<string> {
    return this.statuses.keys();
  }

  counts(): { ready: number; error: number } {
    let ready = 0;
    let error = 0;
    for (const status of this.statuses.values()) status.state === 'ready' ? ready++ : error++;
    return { ready, error };
  }

  /** Whether the network's devices are as desired (the flood entries' part aside). */
  devicesReady(hex: string): boolean {
    return this.devices.get(hex)?.state === 'ready';
  }

  ready(hex: string, specRevision: number, mtu: number): void {
    this.devices.set(hex, { state: 'ready', specRevision, mtu });
    this.set(hex);
  }

  error(hex: string, reason: string, specRevision?: number): void {
    this.devices.set(hex, { state: 'error', reason: boundedReason(reason), ...(specRevision !== undefined ? { specRevision } : {}) });
    this.set(hex);
  }

  /** The flood entries' part; undefined: the network has none (multicast mode, or gone). Written only once the devices reported. */
  flood(hex: string, part: FloodPart | undefined): void {
    const before = this.flooding.get(hex);
    if (part === undefined) this.flooding.delete(hex);
    else this.flooding.set(hex, part.problem === undefined ? part : { problem: boundedReason(part.problem) });
    if (before?.peers === part?.peers && before?.problem === part?.problem) return;
    if (this.devices.has(hex)) this.set(hex);
  }

  /** A router's report on the network's IPAM entry; undefined: it has none to report (no IPAM entry). */
  router(hex: string, report: IpamReport | undefined): void {
    const before = this.routing.get(hex);
    if (report === undefined) this.routing.delete(hex);
    else this.routing.set(hex, report.reason === undefined ? report : { ...report, reason: boundedReason(report.reason) });
    if (JSON.stringify(before) === JSON.stringify(this.routing.get(hex))) return;
    if (this.devices.has(hex)) this.set(hex);
  }

  floodPeers(hex: string): number | undefined {
    return this.flooding.get(hex)?.peers;
  }

  clear(hex: string): void {
    this.devices.delete(hex);
    this.flooding.delete(hex);
    this.routing.delete(hex);
    if (this.statuses.delete(hex)) this.log.info({ vni: hex, op: 'status' }, `network ${hex} removed from this host`);
    this.write(hex, null);
  }

  private set(hex: string): void {
    const device = this.devices.get(hex)!;
    const flood = this.flooding.get(hex);
    const routing = this.routing.get(hex);
    const floodProblem = device.state === 'ready' ? flood?.problem : undefined;
    const routingProblem = device.state === 'ready' && !floodProblem ? routing?.reason : undefined;
    const state = floodProblem || routingProblem ? 'error' : device.state;
    const reason = floodProblem ? `flood entries: ${floodProblem}` : routingProblem ? `router: ${routingProblem}` : device.reason;
    const mtu = device.mtu;
    const status: NetworkStatus = {
      state,
      ...(reason ? { reason } : {}),
      vxlan: vxlanName(hex),
      bridge: bridgeName(hex),
      ...(mtu !== undefined ? { mtu } : {}),
      ...(device.specRevision !== undefined ? { specRevision: device.specRevision } : {}),
      ...(flood?.peers !== undefined ? { floodPeers: flood.peers } : {}),
      ...(routing ? { ipam: routing } : {}),
      updatedAt: new Date(this.now()).toISOString(),
    };
    const previous = this.statuses.get(hex);
    this.statuses.set(hex, status);
    if (previous?.state !== state || previous?.reason !== reason) {
      const level = state === 'ready' ? 'info' : 'warn';
      this.log[level]({ vni: hex, state, reason, op: 'status' }, `network ${hex} is ${state}${reason ? `: ${reason}` : ''}`);
    }
    this.write(hex, status);
  }
}
