#!/usr/bin/env node
/** vxnetctl: writes networks and host attachments into etcd safely, and shows what the agents report. */
import { realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Etcd3 } from 'etcd3';
import { groupFor, parseGroupBase, type GroupBase } from '../model/group.js';
import { MTU_MAX, MTU_MIN } from '../model/spec.js';
import { nonCanonicalVniReason, parseVniHex, vniHex } from '../model/vni.js';
import { openEtcdClient, type EtcdOptions } from '../store/client.js';
import {
  attachedHosts,
  attachHost,
  createNetwork,
  deleteNetwork,
  detachHost,
  effectiveGroupBase,
  getNetwork,
  isEtcdTimeout,
  isEtcdUnreachable,
  listNetworks,
  NotFoundError,
  quarantinePolicy,
  readSettings,
  readStatus,
  RefusedError,
  reservedVniProblem,
  specFor,
  updateSettings,
  type HostStatus,
  type InvalidEntry,
  type Network,
  removeHost,
} from '../store/networks.js';
import { EtcdSchema, hostnameProblem, QUARANTINE_MAX_SECONDS, QUARANTINE_MIN_SECONDS, type CloudSettings } from '../store/schema.js';
import { NotAvailableError } from '../store/ipam.js';
import {
  IPAM_FLAG_COMMANDS,
  IPAM_FLAGS,
  IPAM_JSON_COMMANDS,
  IPAM_OPERANDS,
  IPAM_USAGE,
  ipamCommandName,
  isIpamCommandName,
  parseIpamCommand,
  runIpam,
  type IpamCommand,
} from './vxnetctl-ipam.js';
import { ETCD_FLAGS, etcdOptionsFrom, helpText, parseArgs, parseDurationMs, parseInteger, parsePrefix, UsageError, type FlagSpec } from './flags.js';

export type Command =
  | { name: 'network create'; vni?: number; mtu?: number; owner?: string; description?: string; force: boolean }
  | { name: 'network list' }
  | { name: 'network get'; vni: number }
  | { name: 'network delete'; vni: number; force: boolean }
  | { name: 'host attach' | 'host detach'; host: string; vni: number }
  | { name: 'host remove'; host: string; force: boolean }
  | { name: 'status'; host?: string }
  | { name: 'settings get' }
  | { name: 'settings set'; groupBase?: GroupBase; quarantineSeconds?: number }
  | IpamCommand;

type CommandName = Command['name'];

export interface Invocation {
  command: Command;
  json: boolean;
  etcd: EtcdOptions;
  prefix: string;
  /** --group-base: used where etcd has no cloud-wide group base (`vxnetctl settings`). */
  groupBase: GroupBase;
  /** Whether --group-base was given (command line or environment), rather than defaulted. */
  groupBaseGiven: boolean;
  /** --quarantine of network create/delete: this command's own, instead of the cloud-wide one. */
  quarantineOverrideMs?: number;
}

export type ParseResult = { help: true } | { help: false; invocation: Invocation };

/** Operands of each command; bracketed ones are optional. */
const OPERANDS: Record<CommandName, readonly string[]> = {
  'network create': [],
  'network list': [],
  'network get': ['HEX'],
  'network delete': ['HEX'],
  'host attach': ['HOST', 'HEX'],
  'host detach': ['HOST', 'HEX'],
  'host remove': ['HOST'],
  status: ['[HOST]'],
  'settings get': [],
  'settings set': [],
  ...IPAM_OPERANDS,
};

// An unreachable etcd should fail within seconds, not hang a hook script.
const ETCD_CALL_TIMEOUT_MS = 3000;

/** vxnetd's default --group-base, used while etcd holds no cloud-wide one. */
const DEFAULT_GROUP_BASE = 'ff05::';
const QUARANTINE_BOUNDS = { minMs: QUARANTINE_MIN_SECONDS * 1000, maxMs: QUARANTINE_MAX_SECONDS * 1000 };

const FLAGS: readonly FlagSpec[] = [
  ...ETCD_FLAGS,
  {
    name: 'group-base',
    help:
      `settings set: the cloud-wide multicast group base (as every vxnetd's --group-base); VNIs whose group (base + VNI) is reserved under it are never allocated. ` +
      `Other commands use the cloud-wide one and refuse a --group-base that differs from it; while none is set, this flag's value (default: ${DEFAULT_GROUP_BASE})`,
  },
  {
    name: 'quarantine',
    // Command line only: a VXNETD_QUARANTINE left in some environment would quietly override the
    // cloud-wide quarantine for every command run there.
    commandLineOnly: true,
    help:
      'settings set: the cloud-wide quarantine, how long a deleted VNI is not handed out again (1h … 8760h; 24h while none is set). ' +
      'network create: this command\'s own quarantine instead (network delete: records younger than the longer of the two are kept)',
  },
  // Command line only: a VXNETD_FORCE left in an environment must never force a delete.
  { name: 'force', boolean: true, commandLineOnly: true, help: 'network create --vni: use a quarantined VNI now; network delete: also delete the hosts\' attachments and the network\'s IPAM, in the same transaction; host remove: even while its agent runs' },
  { name: 'json', boolean: true, help: 'print JSON (network list, network get, status, ipam get, ipam list, ipam wait; network create and ipam create always print JSON)' },
  { name: 'vni', help: 'network create: the VNI in lowercase hex (default: the lowest free one)' },
  { name: 'mtu', help: `network create: MTU ${MTU_MIN}…${MTU_MAX} (default: underlay MTU minus encapsulation overhead)` },
  { name: 'owner', help: 'network create: owner; if it already has a network, that one is printed instead' },
  { name: 'description', help: 'network create: free text' },
  ...IPAM_FLAGS,
  { name: 'help', boolean: true, commandLineOnly: true, help: 'show this help' },
];

/** Flags that only some commands accept; every other flag applies to all. */
const FLAG_COMMANDS: Readonly<Record<string, readonly CommandName[]>> = {
  json: ['network create', 'network list', 'network get', 'status', ...IPAM_JSON_COMMANDS],
  vni: ['network create'],
  mtu: ['network create'],
  owner: ['network create'],
  description: ['network create'],
  force: ['network create', 'network delete', 'host remove'],
  quarantine: ['network create', 'network delete', 'settings set'],
  ...IPAM_FLAG_COMMANDS,
};

const USAGE = `Usage: vxnetctl COMMAND [flags]

Commands:
  network create [--vni HEX [--force]] [--mtu N] [--owner X] [--description S]
                          create a network at the lowest free VNI (or --vni) and
                          print it as JSON; with --owner, return that owner's
                          network if it has one ("created": false; refused if
                          --mtu differs from its MTU). VNIs deleted less than
                          the quarantine ago (cloud-wide, or --quarantine) are
                          skipped; --vni of one is refused unless --force
  network list            list networks
  network get HEX         show one network and the hosts attached to it
  network delete HEX [--force]
                          delete a network and quarantine its VNI; refused while
                          hosts are attached or it has IPAM, unless --force, which
                          deletes their attachments and its IPAM in the same
                          transaction
  host attach HOST HEX    attach a host to an existing network
  host detach HOST HEX    detach a host from a network
  host remove HOST [--force]
                          take a host out of the cloud: delete its keys and its
                          entries in the members index (no agent floods to it
                          any more); refused while its agent runs, unless --force
  status [HOST]           agent liveness and per-network status of every host
  settings get            show the cloud-wide settings (JSON)
  settings set [--group-base BASE] [--quarantine DURATION]
                          set the cloud-wide multicast group base (give every
                          vxnetd the same --group-base: each warns at start
                          when its own differs) and the quarantine of deleted
                          VNIs
${IPAM_USAGE}

VNIs are written in lowercase hexadecimal without leading zeros (1 … ffffff).

Exit status: 0 success, 1 failure, 2 usage error, 3 not found,
4 etcd unreachable, 5 refused (hosts still attached, VNI quarantined, the
owner's network has another MTU, the network has IPAM, no IPAM pool, a prefix
outside the pool): nothing was written, 6 ipam wait timed out.`;

export const HELP = helpText(USAGE, FLAGS);

/** Turns arguments and environment into what to do; throws UsageError. Pure: no I/O. */
export function parseInvocation(argv: readonly string[], env: NodeJS.ProcessEnv): ParseResult {
  if (argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') return { help: true };
  const { flags, positionals } = parseArgs(argv, FLAGS, env);
  const command = parseCommand(positionals, flags);
  // Checked on the command line only: a stray VXNETD_OWNER in the environment
  // must not break unrelated commands.
  for (const name of parseArgs(argv, FLAGS, {}).flags.keys()) {
    const accepted = FLAG_COMMANDS[name];
    if (accepted && !accepted.includes(command.name)) {
      throw new UsageError(`--${name} does not apply to ${command.name} (it applies to: ${accepted.join(', ')})`);
    }
  }
  const groupBaseText = flags.get('group-base');
  const groupBase = parseGroupBaseFlag(groupBaseText ?? DEFAULT_GROUP_BASE);
  if (command.name === 'network create' && command.vni !== undefined) {
    const problem = reservedVniProblem(groupBase, command.vni);
    if (problem) throw new UsageError(problem);
  }
  return {
    help: false,
    invocation: {
      command,
      json: parseBoolean('json', flags.get('json')),
      etcd: { ...etcdOptionsFrom(flags), callTimeoutMs: ETCD_CALL_TIMEOUT_MS },
      prefix: parsePrefix(flags.get('prefix')!),
      groupBase,
      groupBaseGiven: groupBaseText !== undefined,
      ...(command.name !== 'settings set' && flags.has('quarantine') ? { quarantineOverrideMs: parseQuarantine(flags.get('quarantine')!) } : {}),
    },
  };
}

function parseCommand(positionals: readonly string[], flags: Map<string, string>): Command {
  const [group, verb] = positionals;
  if (group === undefined) throw new UsageError('missing command (see --help)');
  if ((group === 'network' || group === 'host' || group === 'settings') && verb === undefined) {
    const verbs = Object.keys(OPERANDS).filter((name) => name.startsWith(`${group} `));
    throw new UsageError(`${group} needs a subcommand: ${verbs.map((name) => name.split(' ')[1]).join(', ')}`);
  }
  const name = ipamCommandName(positionals) ?? (group === 'status' ? group : positionals.slice(0, 2).join(' '));
  if (!isCommandName(name)) throw new UsageError(`unknown command ${JSON.stringify(name)} (see --help)`);
  const operands = positionals.slice(name.split(' ').length);
  const expected = OPERANDS[name];
  const required = expected.filter((operand) => !operand.startsWith('['));
  if (operands.length < required.length || operands.length > expected.length) {
    throw new UsageError(`usage: vxnetctl ${[name, ...expected].join(' ')}`);
  }
  if (isIpamCommandName(name)) return parseIpamCommand(name, operands, flags);
  switch (name) {
    case 'network create':
      return parseCreate(flags);
    case 'network list':
    case 'settings get':
      return { name };
    case 'network get':
      return { name, vni: parseVni(operands[0]!) };
    case 'network delete':
      return { name, vni: parseVni(operands[0]!), force: parseBoolean('force', flags.get('force')) };
    case 'settings set': {
      const text = flags.get('group-base');
      const quarantine = flags.get('quarantine');
      if (text === undefined && quarantine === undefined) throw new UsageError('settings set needs --group-base BASE (e.g. ff05::), --quarantine DURATION (e.g. 24h), or both');
      return {
        name,
        ...(text !== undefined ? { groupBase: parseGroupBaseFlag(text) } : {}),
        ...(quarantine !== undefined ? { quarantineSeconds: Math.round(parseQuarantine(quarantine) / 1000) } : {}),
      };
    }
    case 'host attach':
    case 'host detach':
      return { name, host: parseHost(operands[0]!), vni: parseVni(operands[1]!) };
    case 'host remove':
      return { name, host: parseHost(operands[0]!), force: parseBoolean('force', flags.get('force')) };
    case 'status':
      return operands[0] === undefined ? { name } : { name, host: parseHost(operands[0]) };
  }
}

function isCommandName(name: string): name is CommandName {
  return Object.hasOwn(OPERANDS, name);
}

function parseCreate(flags: Map<string, string>): Command {
  const vniText = flags.get('vni');
  const mtuText = flags.get('mtu');
  const owner = flags.get('owner');
  const description = flags.get('description');
  // An unset shell variable (--owner "$CUSTOMER") would otherwise make every caller share one network.
  if (owner === '') throw new UsageError('--owner must not be empty');
  const force = parseBoolean('force', flags.get('force'));
  if (force && vniText === undefined) throw new UsageError('--force applies to network create only with --vni (a quarantined VNI)');
  const command = {
    name: 'network create' as const,
    force,
    ...(vniText !== undefined ? { vni: parseVni(vniText, '--vni') } : {}),
    ...(mtuText !== undefined ? { mtu: parseInteger('mtu', mtuText, MTU_MIN, MTU_MAX) } : {}),
    ...(owner !== undefined ? { owner } : {}),
    ...(description !== undefined ? { description } : {}),
  };
  try {
    specFor(command);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  return command;
}

/** `flag` names the flag the text came from, if it did not come from an operand. */
function parseVni(text: string, flag?: string): number {
  const vni = parseVniHex(text);
  if (vni !== undefined) return vni;
  throw new UsageError(`${flag ? `${flag}: ` : ''}${nonCanonicalVniReason(text)}`);
}

function parseHost(text: string): string {
  const problem = hostnameProblem(text);
  if (problem) throw new UsageError(problem);
  return text;
}

function parseGroupBaseFlag(text: string): GroupBase {
  try {
    return parseGroupBase(text);
  } catch (error) {
    throw new UsageError(`--group-base: ${(error as Error).message}`);
  }
}

function parseQuarantine(text: string): number {
  return parseDurationMs('quarantine', text, QUARANTINE_BOUNDS);
}

function parseBoolean(name: string, text: string | undefined): boolean {
  if (text === undefined) return false;
  if (['true', '1', 'yes'].includes(text)) return true;
  if (['false', '0', 'no'].includes(text)) return false;
  throw new UsageError(`--${name} must be true or false, got ${JSON.stringify(text)}`);
}

export interface Output {
  out(text: string): void;
  warn(text: string): void;
}

export async function main(argv: readonly string[], env: NodeJS.ProcessEnv, output: Output): Promise<number> {
  let invocation: Invocation | undefined;
  let client: Etcd3 | undefined;
  try {
    const parsed = parseInvocation(argv, env);
    if (parsed.help) {
      output.out(HELP);
      return 0;
    }
    invocation = parsed.invocation;
    client = await openEtcdClient(invocation.etcd, new EtcdSchema(invocation.prefix).settingsKey);
    await run(client, invocation, output);
    return 0;
  } catch (error) {
    output.warn(`vxnetctl: ${describeError(error, invocation)}`);
    return exitCodeFor(error);
  } finally {
    client?.close();
  }
}

export function exitCodeFor(error: unknown): number {
  if (error instanceof UsageError) return 2;
  if (error instanceof NotFoundError) return 3;
  if (isEtcdUnreachable(error)) return 4;
  if (error instanceof RefusedError) return 5;
  if (error instanceof NotAvailableError) return 6;
  return 1;
}

function describeError(error: unknown, invocation: Invocation | undefined): string {
  const message = error instanceof Error ? error.message : String(error);
  if (invocation && isEtcdUnreachable(error)) {
    const endpoints = invocation.etcd.endpoints.join(', ');
    const what = isEtcdTimeout(error)
      ? `etcd at ${endpoints} did not answer within ${ETCD_CALL_TIMEOUT_MS / 1000} s`
      : `cannot reach etcd at ${endpoints} (${message.replace(/\s*Resolution note:\s*$/, '').replace(/^\d+ [A-Z_]+: /, '')})`;
    return `${what}; check --etcd-endpoints (VXNETD_ETCD_ENDPOINTS) and that etcd is running`;
  }
  return message.split('\n')[0]!;
}

/**
 * The group base that decides which VNIs are reserved: the cloud-wide one (etcd), else --group-base.
 * A --group-base that contradicts the cloud-wide one is refused: one of the two is wrong, and
 * allocating by either could hand out a VNI the agents refuse.
 */
async function groupBaseFor(client: Etcd3, schema: EtcdSchema, invocation: Invocation, settings?: CloudSettings): Promise<GroupBase> {
  const base = effectiveGroupBase(settings ?? (await readSettings(client, schema)), invocation.groupBase);
  if (invocation.groupBaseGiven && base.text !== invocation.groupBase.text) {
    throw new UsageError(
      `--group-base ${invocation.groupBase.text} (or VXNETD_GROUP_BASE) differs from the cloud-wide group base ${base.text} in ${schema.settingsKey}; ` +
        `omit it, or change the cloud-wide one with vxnetctl settings set --group-base`,
    );
  }
  return base;
}

async function run(client: Etcd3, invocation: Invocation, output: Output): Promise<void> {
  const { command, prefix, json } = invocation;
  const schema = new EtcdSchema(prefix);
  if (isIpamCommand(command)) return runIpam(client, schema, command, json, output, { formatTable, cell });
  switch (command.name) {
    case 'network create': {
      const settings = await readSettings(client, schema);
      const groupBase = await groupBaseFor(client, schema, invocation, settings);
      const problem = command.vni === undefined ? undefined : reservedVniProblem(groupBase, command.vni);
      if (problem) throw new UsageError(problem);
      const { quarantineMs, keepRecordsMs } = quarantinePolicy(settings, invocation.quarantineOverrideMs);
      const { network, created } = await createNetwork(client, schema, { ...command, groupBase, quarantineMs, keepRecordsMs });
      output.out(JSON.stringify({ ...networkJson(network), created }));
      return;
    }
    case 'settings get':
      output.out(JSON.stringify(await readSettings(client, schema)));
      return;
    case 'settings set': {
      output.out(JSON.stringify(await updateSettings(client, schema, { groupBase: command.groupBase, quarantineSeconds: command.quarantineSeconds })));
      return;
    }
    case 'network list': {
      const { networks, invalid } = await listNetworks(client, schema);
      warnInvalid(output, invalid);
      if (json) output.out(JSON.stringify(networks.map(networkJson)));
      else output.out(networkTable(networks));
      return;
    }
    case 'network get': {
      const network = await getNetwork(client, schema, command.vni);
      const hosts = await attachedHosts(client, schema, command.vni);
      const group = groupFor(await groupBaseFor(client, schema, invocation), command.vni).text;
      if (json) {
        output.out(JSON.stringify({ ...networkJson(network), group, hosts }));
      } else {
        const { spec } = network;
        output.out(
          formatTable([
            ['vni', network.hex],
            ['id', String(network.vni)],
            ['group', group],
            ['mtu', spec.mtu === undefined ? 'auto' : String(spec.mtu)],
            ['owner', cell(spec.owner)],
            ['description', cell(spec.description)],
            ['hosts', hosts.length === 0 ? '-' : hosts.map(cell).join(', ')],
          ]),
        );
      }
      return;
    }
    case 'network delete': {
      const { keepRecordsMs } = quarantinePolicy(await readSettings(client, schema), invocation.quarantineOverrideMs);
      const { detached, ipamPrefix } = await deleteNetwork(client, schema, command.vni, { force: command.force, quarantineMs: keepRecordsMs });
      const hex = vniHex(command.vni);
      const ipam = ipamPrefix === undefined ? '' : ` with its IPAM${ipamPrefix === null ? '' : ` (prefix ${ipamPrefix})`}`;
      output.out(detached.length ? `deleted network ${hex}${ipam} and the attachments of ${detached.join(', ')}` : `deleted network ${hex}${ipam}`);
      return;
    }
    case 'host attach': {
      const hex = vniHex(command.vni);
      const attached = await attachHost(client, schema, command.host, command.vni);
      output.out(attached ? `attached ${command.host} to network ${hex}` : `${command.host} was already attached to network ${hex}`);
      return;
    }
    case 'host detach':
      await detachHost(client, schema, command.host, command.vni);
      output.out(`detached ${command.host} from network ${vniHex(command.vni)}`);
      return;
    case 'host remove': {
      const { hostKeys, memberOf } = await removeHost(client, schema, command.host, { force: command.force });
      output.out(`removed host ${command.host}: ${hostKeys} keys under ${schema.hostDir(command.host)}, members of ${memberOf.length ? memberOf.join(', ') : 'no network'}`);
      return;
    }
    case 'status': {
      const { hosts, invalid } = await readStatus(client, schema, command.host);
      warnInvalid(output, invalid);
      if (command.host !== undefined && hosts.length === 0) {
        throw new NotFoundError(`host ${command.host} has no agent, attachments or status under ${schema.hostDir(command.host)}`);
      }
      output.out(json ? JSON.stringify(hosts.map(hostJson)) : statusTables(hosts));
      return;
    }
  }
}

function isIpamCommand(command: Command): command is IpamCommand {
  return isIpamCommandName(command.name);
}

function warnInvalid(output: Output, invalid: readonly InvalidEntry[]): void {
  for (const entry of invalid) output.warn(`vxnetctl: warning: ignoring ${cell(entry.key)}: ${entry.reason}`);
}

function networkJson({ hex, vni, spec }: Network) {
  return { vni: hex, id: vni, mtu: spec.mtu ?? null, owner: spec.owner ?? null, description: spec.description ?? null };
}

function hostJson({ host, agent, networks }: HostStatus) {
  return {
    host,
    agent: agent ?? null,
    networks: networks.map(({ hex, vni, attached, status }) => ({ vni: hex, id: vni, attached, status: status ?? null })),
  };
}

function networkTable(networks: readonly Network[]): string {
  return formatTable([
    ['VNI', 'ID', 'MTU', 'OWNER', 'DESCRIPTION'],
    ...networks.map(({ hex, vni, spec }) => [
      hex,
      String(vni),
      spec.mtu === undefined ? 'auto' : String(spec.mtu),
      cell(spec.owner),
      cell(spec.description),
    ]),
  ]);
}

function statusTables(hosts: readonly HostStatus[]): string {
  const agents = formatTable([
    ['HOST', 'AGENT', 'VERSION', 'PID', 'UNDERLAY', 'ADDRESS', 'STARTED'],
    ...hosts.map(({ host, agent }) => [
      cell(host),
      agent === undefined ? 'down' : agent.ready === true ? 'ready' : 'starting',
      cell(agent?.version),
      cell(agent?.pid),
      cell(agent?.underlay),
      cell(agent?.underlayAddress),
      cell(agent?.startedAt),
    ]),
  ]);
  const networks = formatTable([
    ['HOST', 'VNI', 'ATTACHED', 'STATE', 'MTU', 'UPDATED', 'REASON'],
    ...hosts.flatMap(({ host, networks }) =>
      networks.map(({ hex, attached, status }) => [
        cell(host),
        hex,
        attached ? 'yes' : 'no',
        status === undefined ? (attached ? 'pending' : '-') : cell(status.state),
        cell(status?.mtu),
        cell(status?.updatedAt),
        cell(status?.reason),
      ]),
    ),
  ]);
  return `${agents}\n\n${networks}`;
}

/** One table cell: absent values as '-', control characters neutralised so rows stay rows. */
function cell(value: unknown): string {
  if (value === undefined || value === null || value === '') return '-';
  const text = typeof value === 'string' ? value : JSON.stringify(value);
  return text.replace(/[\u0000-\u001f\u007f]/g, ' ');
}

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export function formatTable(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) row.forEach((text, column) => (widths[column] = Math.max(widths[column] ?? 0, text.length)));
  return rows
    .map((row) => row.map((text, column) => (column === row.length - 1 ? text : text.padEnd(widths[column]!))).join('  '))
    .join('\n');
}

function isEntryPoint(): boolean {
  const script = process.argv[1];
  if (!script) return false;
  try {
    // npm installs bin entries as symlinks; the module URL is the resolved file.
    return realpathSync(script) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

if (isEntryPoint()) {
  // Not a top-level await: the bundle is CommonJS (scripts/bundle.mjs). A rejection still ends the process.
  void main(process.argv.slice(2), process.env, {
    out: (text) => process.stdout.write(`${text}\n`),
    warn: (text) => process.stderr.write(`${text}\n`),
  }).then((code) => {
    process.exitCode = code;
  });
}
