/** The status of every network on this host (DESIGN.md §1): the only owner, and what it hands to etcd. */
import { cutText } from '../model/spec.js';
import { bridgeName, vxlanName } from '../model/vni.js';
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

export class NetworkStatuses {
  private readonly statuses = new Map<string, NetworkStatus>();

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

  ready(hex: string, specRevision: number, mtu: number): void {
    this.set(hex, 'ready', undefined, specRevision, mtu);
  }

  error(hex: string, reason: string, specRevision?: number): void {
    this.set(hex, 'error', boundedReason(reason), specRevision);
  }

  clear(hex: string): void {
    if (this.statuses.delete(hex)) this.log.info({ vni: hex, op: 'status' }, `network ${hex} removed from this host`);
    this.write(hex, null);
  }

  private set(hex: string, state: NetworkStatus['state'], reason?: string, specRevision?: number, mtu?: number): void {
    const status: NetworkStatus = {
      state,
      ...(reason ? { reason } : {}),
      vxlan: vxlanName(hex),
      bridge: bridgeName(hex),
      ...(mtu !== undefined ? { mtu } : {}),
      ...(specRevision !== undefined ? { specRevision } : {}),
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
