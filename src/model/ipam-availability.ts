/**
 * When a network's IPAM is available (DESIGN.md §8): only once every live router advertises the
 * current IPAM entry. Pure: the caller reads the entry, the routers' liveness and their statuses.
 */

/**
 * What a router says, in its status for a network (`ipam` in NetworkStatus), about the network's
 * IPAM entry: the revision it acted on and either the prefix it advertises or why it cannot.
 */
export interface IpamReport {
  /** The etcd mod_revision of the IPAM entry the router acted on. */
  revision: number;
  /** The prefix advertised (RFC 5952 form, as in the entry); absent when `reason` says why not. */
  prefix?: string;
  /** Why the router does not advertise the entry (radvd failed, address refused …). */
  reason?: string;
}

export interface RouterReport {
  host: string;
  /** Undefined when the router has written no status for the network, or one without `ipam`. */
  ipam?: IpamReport;
}

export type RouterState = { host: string; serving: true } | { host: string; serving: false; reason: string };

export interface Availability {
  available: boolean;
  /** Every live router, sorted by host, with whether it serves the current entry. */
  routers: RouterState[];
  /** The hosts of the routers that do not (yet) serve it. */
  waitingFor: string[];
  /** Set when no router is live: nothing advertises the prefix, so it is not available either. */
  reason?: string;
}

export const NO_LIVE_ROUTER = 'no live router: nothing advertises the prefix';

/**
 * `entry` is the IPAM entry as read (its prefix and mod_revision); `routers` are the live routers
 * (their liveness keys exist and say role router) with their reports. A router that reports an
 * older revision still advertises what the entry said before (or nothing yet); one that reports a
 * newer revision shows that `entry` was read before a change, so it is not counted as serving
 * either: the caller reads again.
 */
export function ipamAvailability(entry: { prefix: string; revision: number }, routers: readonly RouterReport[]): Availability {
  const states = [...routers]
    .sort((a, b) => (a.host < b.host ? -1 : a.host > b.host ? 1 : 0))
    .map((router): RouterState => {
      const reason = notServingReason(entry, router.ipam);
      return reason === undefined ? { host: router.host, serving: true } : { host: router.host, serving: false, reason };
    });
  const waitingFor = states.filter((state) => !state.serving).map((state) => state.host);
  if (states.length === 0) return { available: false, routers: [], waitingFor: [], reason: NO_LIVE_ROUTER };
  return { available: waitingFor.length === 0, routers: states, waitingFor };
}

function notServingReason(entry: { prefix: string; revision: number }, report: IpamReport | undefined): string | undefined {
  if (report === undefined) return 'has not reported on this IPAM entry yet';
  if (report.revision < entry.revision) return `still on IPAM revision ${report.revision} (current: ${entry.revision})`;
  if (report.revision > entry.revision) return `reports IPAM revision ${report.revision}, newer than the ${entry.revision} read: read again`;
  if (report.reason !== undefined) return `cannot serve it: ${report.reason}`;
  if (report.prefix !== entry.prefix) return `reports prefix ${report.prefix ?? 'none'}, not ${entry.prefix}`;
  return undefined;
}
