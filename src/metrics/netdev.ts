/**
 * Per-interface metrics of the devices vxnetd manages, rendered directly in
 * the Prometheus text exposition format (0.0.4) from one link dump.
 *
 * Why not prom-client Counters/Gauges: with thousands of devices these families
 * hold tens of thousands of series, and prom-client's per-label-set work alone
 * took longer than the rest of a scrape; here each device's label set is built
 * and escaped once (bench/RESULTS.md, bench/metrics-scrape.ts).
 */
import { IFF_LOWER_UP, IFF_UP, type Link, type LinkStats } from '../model/link.js';
import { hexFromOwnerAlias } from '../model/identity.js';

export type ManagedKind = 'vxlan' | 'bridge';

/** A device vxnetd owns, as the metrics see it. */
export interface ManagedDevice {
  link: Link;
  /** Canonical VNI hex from the owner alias `vxnetd:<hex>`. */
  vni: string;
  kind: ManagedKind;
  /** Name of the master device, '' if none (or if it vanished during the dump). */
  master: string;
}

/**
 * The devices vxnetd owns: alias `vxnetd:<canonical hex>` and kind vxlan or
 * bridge. Foreign devices, devices with a non-canonical owner alias and
 * anything that is neither a vxlan nor a bridge are left out.
 */
export function managedDevices(links: readonly Link[]): ManagedDevice[] {
  const names = new Map<number, string>();
  for (const link of links) names.set(link.index, link.name);
  const managed: ManagedDevice[] = [];
  for (const link of links) {
    const vni = hexFromOwnerAlias(link.alias);
    if (vni === undefined) continue;
    if (link.kind !== 'vxlan' && link.kind !== 'bridge') continue;
    const master = link.master ? (names.get(link.master) ?? '') : '';
    managed.push({ link, vni, kind: link.kind, master });
  }
  return managed;
}

const NEEDS_ESCAPE = /[\\"\n]/;

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(value: string): string {
  if (!NEEDS_ESCAPE.test(value)) return value;
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Escapes HELP text: backslash and line feed (quotes stay as they are). */
export function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/**
 * A sample value as Prometheus parses it. Integers below 2^53 print exactly;
 * larger numbers print as the nearest float64 (what Prometheus stores anyway);
 * a bigint (should a Kernel implementation hand one over) prints exactly.
 */
export function formatValue(value: number | bigint): string {
  if (typeof value === 'bigint') return value.toString();
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

interface Family {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  /** The sample value for a device, or undefined when the kernel did not report it. */
  value(device: ManagedDevice): number | bigint | undefined;
}

const STATS_SOURCE = 'from the kernel (IFLA_STATS64 of one RTM_GETLINK dump) at scrape time';

/** rxDropped → rx_dropped, the name in struct rtnl_link_stats64. */
const kernelField = (field: string) => field.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

function statsFamily(name: string, field: keyof LinkStats, what: string): Family {
  return {
    name,
    type: 'counter',
    help: `${what} on a vxnetd-managed device (${kernelField(field)}), ${STATS_SOURCE}. Same meaning as node_exporter's node_${name.slice('vxnetd_'.length)}.`,
    value: (d) => d.link.stats?.[field],
  };
}

/** The families, in output order; names and labels are part of the contract (DESIGN.md §4). */
const FAMILIES: readonly Family[] = [
  statsFamily('vxnetd_network_receive_bytes_total', 'rxBytes', 'Bytes received'),
  statsFamily('vxnetd_network_receive_packets_total', 'rxPackets', 'Packets received'),
  statsFamily('vxnetd_network_receive_errs_total', 'rxErrors', 'Receive errors'),
  statsFamily('vxnetd_network_receive_drop_total', 'rxDropped', 'Received packets dropped'),
  statsFamily('vxnetd_network_transmit_bytes_total', 'txBytes', 'Bytes transmitted'),
  statsFamily('vxnetd_network_transmit_packets_total', 'txPackets', 'Packets transmitted'),
  statsFamily('vxnetd_network_transmit_errs_total', 'txErrors', 'Transmit errors'),
  statsFamily('vxnetd_network_transmit_drop_total', 'txDropped', 'Transmitted packets dropped'),
  {
    name: 'vxnetd_network_mtu_bytes',
    type: 'gauge',
    help: 'MTU of a vxnetd-managed device in bytes (IFLA_MTU), read from the kernel at scrape time.',
    value: (d) => d.link.mtu,
  },
  {
    name: 'vxnetd_network_up',
    type: 'gauge',
    help:
      '1 if a vxnetd-managed device is administratively up and has carrier (IFF_UP and IFF_LOWER_UP), else 0; ' +
      "read from the kernel at scrape time. Unlike node_exporter's node_network_up (operstate up), " +
      'this is 1 for a working vxlan, whose operstate is always "unknown".',
    value: (d) => ((d.link.flags & IFF_UP) !== 0 && (d.link.flags & IFF_LOWER_UP) !== 0 ? 1 : 0),
  },
  {
    name: 'vxnetd_network_carrier_changes_total',
    type: 'counter',
    help: 'Carrier up/down transitions of a vxnetd-managed device since it was created (IFLA_CARRIER_CHANGES), read from the kernel at scrape time.',
    value: (d) => d.link.carrierChanges,
  },
];

const INFO_HELP =
  'Always 1, one series per vxnetd-managed device: master is the name of the device it is enslaved to ' +
  '("" if none), ifalias its interface alias (vxnetd:<vni-hex>, then the identity that made it); read from the kernel at scrape time.';

/** The names of every per-interface family, e.g. to check an exposition for completeness. */
export const NETDEV_FAMILY_NAMES: readonly string[] = [...FAMILIES.map((f) => f.name), 'vxnetd_network_info'];

/**
 * Renders the per-interface families for the managed devices among `links`
 * (one dump, so every family describes the same instant). HELP and TYPE are
 * always present, even with no managed device. Ends with a line feed.
 */
export function renderNetdev(links: readonly Link[]): string {
  const devices = managedDevices(links);
  // Each device's label set is built and escaped once for all families.
  const labels = devices.map(
    (d) => `device="${escapeLabelValue(d.link.name)}",vni="${d.vni}",kind="${d.kind}"`,
  );
  let out = '';
  for (const family of FAMILIES) {
    out += `# HELP ${family.name} ${escapeHelp(family.help)}\n# TYPE ${family.name} ${family.type}\n`;
    const prefix = `${family.name}{`;
    for (let i = 0; i < devices.length; i++) {
      const value = family.value(devices[i]!);
      if (value === undefined) continue;
      out += `${prefix}${labels[i]}} ${formatValue(value)}\n`;
    }
  }
  out += `# HELP vxnetd_network_info ${escapeHelp(INFO_HELP)}\n# TYPE vxnetd_network_info gauge\n`;
  for (let i = 0; i < devices.length; i++) {
    const d = devices[i]!;
    out += `vxnetd_network_info{${labels[i]},master="${escapeLabelValue(d.master)}",ifalias="${escapeLabelValue(d.link.alias ?? '')}"} 1\n`;
  }
  return out;
}
