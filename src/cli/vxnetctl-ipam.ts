/**
 * vxnetctl's IPAM commands (DESIGN.md §8): the pool, a network's /64, whether the routers serve
 * it, and the address a VM takes in it. vxnetctl.ts dispatches here; the etcd side is
 * store/ipam.ts.
 */
import type { Etcd3 } from 'etcd3';
import { parseMac, slaacAddress } from '../model/eui64.js';
import type { Availability } from '../model/ipam-availability.js';
import { parseDnsServers, parsePool, parseSubnet, type Ipv6Prefix } from '../model/ipv6-prefix.js';
import { nonCanonicalVniReason, parseVniHex, vniHex } from '../model/vni.js';
import {
  createIpam,
  deleteIpam,
  getIpam,
  listIpam,
  readIpamPool,
  readIpamStatus,
  setIpamPool,
  waitForIpam,
  waitingText,
  type IpamRecord,
  type IpamStatus,
} from '../store/ipam.js';
import { NotFoundError, type InvalidEntry } from '../store/networks.js';
import type { EtcdSchema } from '../store/schema.js';
import { parseDurationMs, UsageError, type FlagSpec } from './flags.js';

export type IpamCommand =
  | { name: 'ipam pool set'; pool: Ipv6Prefix }
  | { name: 'ipam pool get' }
  | { name: 'ipam create'; vni: number; subnet?: Ipv6Prefix; dns: string[] }
  | { name: 'ipam get' | 'ipam delete'; vni: number }
  | { name: 'ipam list' }
  | { name: 'ipam wait'; vni: number; timeoutMs: number }
  | { name: 'address'; vni: number; mac: Buffer };

export type IpamCommandName = IpamCommand['name'];

export const IPAM_OPERANDS: Record<IpamCommandName, readonly string[]> = {
  'ipam pool set': ['POOL'],
  'ipam pool get': [],
  'ipam create': ['HEX'],
  'ipam get': ['HEX'],
  'ipam list': [],
  'ipam delete': ['HEX'],
  'ipam wait': ['HEX'],
  address: ['HEX', 'MAC'],
};

const DEFAULT_WAIT_TIMEOUT = '60s';
/** A wait shorter than a second cannot see a router's report arrive; one over a day is a stuck hook. */
const WAIT_TIMEOUT_BOUNDS = { minMs: 1000, maxMs: 24 * 3_600_000 };

export const IPAM_FLAGS: readonly FlagSpec[] = [
  // Not --prefix: that is the etcd key prefix, which every command takes.
  { name: 'ipv6-prefix', help: 'ipam create: the /64 to give the network (inside the pool; default: the lowest free one)' },
  { name: 'dns', repeatable: true, help: 'ipam create: a name server advertised to the network\'s VMs (RDNSS); repeat it, or separate with commas, for up to 3' },
  { name: 'timeout', help: `ipam wait: how long to wait for every live router to serve the entry (default: ${DEFAULT_WAIT_TIMEOUT})` },
];

/** Flags only some IPAM commands accept (see vxnetctl.ts FLAG_COMMANDS). */
export const IPAM_FLAG_COMMANDS: Readonly<Record<string, readonly IpamCommandName[]>> = {
  'ipv6-prefix': ['ipam create'],
  dns: ['ipam create'],
  timeout: ['ipam wait'],
};

/** IPAM commands that print JSON with --json. */
export const IPAM_JSON_COMMANDS: readonly IpamCommandName[] = ['ipam get', 'ipam list', 'ipam wait'];

export const IPAM_USAGE = `  ipam pool set POOL      set the cloud-wide IPv6 pool (e.g. 2001:db8:100::/48,
                          at most /64); refused if allocated /64s would fall
                          outside it
  ipam pool get           show the pool (JSON)
  ipam create HEX [--ipv6-prefix P/64] [--dns ADDR]...
                          give an existing network the lowest free /64 of the
                          pool (or P), in one etcd transaction; prints JSON
  ipam get HEX            show a network's IPAM and whether every live router
                          serves it (available)
  ipam list               list every network's IPAM
  ipam delete HEX         delete a network's IPAM (it stays a layer-2 network)
  ipam wait HEX [--timeout D]
                          wait until every live router serves the current entry
  address HEX MAC         the address a VM with MAC takes on the network by
                          SLAAC (EUI-64)`;

export function isIpamCommandName(name: string): name is IpamCommandName {
  return Object.hasOwn(IPAM_OPERANDS, name);
}

/** The command's name from its first words: `ipam pool set` has three. */
export function ipamCommandName(positionals: readonly string[]): string | undefined {
  const [group, verb] = positionals;
  if (group === 'address') return group;
  if (group !== 'ipam') return undefined;
  if (verb === undefined) throw new UsageError('ipam needs a subcommand: pool, create, get, list, delete, wait');
  if (verb !== 'pool') return positionals.slice(0, 2).join(' ');
  if (positionals[2] === undefined) throw new UsageError('ipam pool needs a subcommand: set, get');
  return positionals.slice(0, 3).join(' ');
}

export function parseIpamCommand(name: IpamCommandName, operands: readonly string[], flags: Map<string, string>): IpamCommand {
  switch (name) {
    case 'ipam pool set':
      return { name, pool: usage(() => parsePool(operands[0]!)) };
    case 'ipam pool get':
    case 'ipam list':
      return { name };
    case 'ipam create': {
      const prefixText = flags.get('ipv6-prefix');
      const dnsText = flags.get('dns');
      return {
        name,
        vni: parseVniOperand(operands[0]!),
        ...(prefixText !== undefined ? { subnet: usage(() => parseSubnet(prefixText), '--ipv6-prefix') } : {}),
        dns: dnsText === undefined ? [] : usage(() => parseDnsServers(dnsText.split(',').map((text) => text.trim())), '--dns'),
      };
    }
    case 'ipam get':
    case 'ipam delete':
      return { name, vni: parseVniOperand(operands[0]!) };
    case 'ipam wait':
      return { name, vni: parseVniOperand(operands[0]!), timeoutMs: parseDurationMs('timeout', flags.get('timeout') ?? DEFAULT_WAIT_TIMEOUT, WAIT_TIMEOUT_BOUNDS) };
    case 'address':
      return { name, vni: parseVniOperand(operands[0]!), mac: usage(() => parseMac(operands[1]!)) };
  }
}

function usage<T>(parse: () => T, flag?: string): T {
  try {
    return parse();
  } catch (error) {
    throw new UsageError(`${flag ? `${flag}: ` : ''}${(error as Error).message}`);
  }
}

function parseVniOperand(text: string): number {
  const vni = parseVniHex(text);
  if (vni === undefined) throw new UsageError(nonCanonicalVniReason(text));
  return vni;
}

export interface IpamOutput {
  out(text: string): void;
  warn(text: string): void;
}

/** vxnetctl's table helpers, passed in so that this module does not import its entry point. */
export interface Presentation {
  formatTable(rows: readonly (readonly string[])[]): string;
  cell(value: unknown): string;
}

export async function runIpam(
  client: Etcd3,
  schema: EtcdSchema,
  command: IpamCommand,
  json: boolean,
  output: IpamOutput,
  { formatTable, cell }: Presentation,
): Promise<void> {
  const warnInvalid = (invalid: readonly InvalidEntry[]) => {
    for (const entry of invalid) output.warn(`vxnetctl: warning: ignoring ${cell(entry.key)}: ${entry.reason}`);
  };
  switch (command.name) {
    case 'ipam pool set': {
      const { pool, previous } = await setIpamPool(client, schema, command.pool);
      output.out(JSON.stringify({ prefix: pool, previous: previous ?? null }));
      return;
    }
    case 'ipam pool get': {
      const pool = await readIpamPool(client, schema);
      if (!pool) throw new NotFoundError('no IPAM pool is set; set one with vxnetctl ipam pool set POOL (e.g. 2001:db8:100::/48)');
      output.out(JSON.stringify({ prefix: pool.text }));
      return;
    }
    case 'ipam create': {
      const record = await createIpam(client, schema, { vni: command.vni, dns: command.dns, ...(command.subnet ? { subnet: command.subnet } : {}) });
      output.out(JSON.stringify(recordJson(record)));
      return;
    }
    case 'ipam get':
    case 'ipam wait': {
      const status =
        command.name === 'ipam wait'
          ? await waitForIpam(client, schema, command.vni, { timeoutMs: command.timeoutMs })
          : await readIpamStatus(client, schema, command.vni);
      if (json) output.out(JSON.stringify(statusJson(status)));
      else if (command.name === 'ipam wait') output.out(`IPAM of network ${status.record.hex} (${status.record.entry.prefix}) is available: ${servedBy(status.availability)}`);
      else output.out(statusTable(status, formatTable, cell));
      return;
    }
    case 'ipam list': {
      const { entries, invalid } = await listIpam(client, schema);
      warnInvalid(invalid);
      if (json) {
        output.out(JSON.stringify(entries.map(recordJson)));
      } else {
        output.out(
          formatTable([
            ['VNI', 'PREFIX', 'DNS', 'REVISION', 'CREATED'],
            ...entries.map(({ hex, entry, revision }) => [hex, entry.prefix, entry.dns.length ? entry.dns.join(',') : '-', String(revision), cell(entry.createdAt)]),
          ]),
        );
      }
      return;
    }
    case 'ipam delete': {
      const { prefix } = await deleteIpam(client, schema, command.vni);
      output.out(`deleted the IPAM of network ${vniHex(command.vni)}${prefix ? ` (prefix ${prefix})` : ''}`);
      return;
    }
    case 'address': {
      const record = await getIpam(client, schema, command.vni);
      output.out(slaacAddress(parseSubnet(record.entry.prefix), command.mac));
      return;
    }
  }
}

function recordJson({ hex, vni, entry, revision }: IpamRecord) {
  return { vni: hex, id: vni, prefix: entry.prefix, dns: entry.dns, createdAt: entry.createdAt, revision };
}

function statusJson({ record, availability }: IpamStatus) {
  return {
    ...recordJson(record),
    available: availability.available,
    waitingFor: availability.waitingFor,
    routers: availability.routers,
    ...(availability.reason ? { reason: availability.reason } : {}),
  };
}

function servedBy(availability: Availability): string {
  return `served by ${availability.routers.map((router) => router.host).join(', ')}`;
}

function statusTable({ record, availability }: IpamStatus, formatTable: Presentation['formatTable'], cell: Presentation['cell']): string {
  return formatTable([
    ['vni', record.hex],
    ['prefix', record.entry.prefix],
    ['dns', record.entry.dns.length ? record.entry.dns.join(', ') : '-'],
    ['created', cell(record.entry.createdAt)],
    ['revision', String(record.revision)],
    ['available', availability.available ? `yes, ${servedBy(availability)}` : `no: ${waitingText(availability)}`],
  ]);
}
