/** vxnetd's flags → a validated configuration (pure, unit-tested). */
import { hostname as osHostname } from 'node:os';
import { formatAddress, parseAddress, parseGroupBase, type GroupBase } from '../model/group.js';
import type { FloodMode } from '../model/network.js';
import type { EtcdOptions } from '../store/client.js';
import { hostnameProblem, parseRouterNumber, routerNumberProblem } from '../store/schema.js';
import { ETCD_FLAGS, UsageError, etcdOptionsFrom, parseArgs, parseDurationMs, parseInteger, parsePrefix, type FlagSpec } from './flags.js';

export const VXNETD_FLAGS: readonly FlagSpec[] = [
  ...ETCD_FLAGS,
  { name: 'hostname', help: 'this host\'s name in etcd keys (/v1/hosts/<hostname>/…): letters, digits, hyphens and dots (RFC 1123); default: the system host name' },
  { name: 'underlay', help: 'underlay interface the VXLAN devices send on (required)' },
  { name: 'scope', help: '"all": every network; "attached": only networks attached to this host', default: 'all' },
  {
    name: 'role',
    help: '"hypervisor", or "router": realises every network, and for each one with IPAM gives its bridge a link-local address and <prefix>::<router number>, and advertises the prefix with radvd',
    default: 'hypervisor',
  },
  { name: 'router-number', help: 'router: this router\'s number in the cloud (1 … 65535; default: the one it holds, else the lowest free one, kept in etcd)' },
  { name: 'radvd', help: 'router: the radvd program', default: '/usr/sbin/radvd' },
  { name: 'radvd-dir', help: 'router: where radvd\'s generated configuration, pid file and log live (must outlive the agent: radvd does)', default: '/run/vxnetd' },
  { name: 'metrics-listen', help: 'address:port for /metrics, /healthz and /readyz', default: '[::]:9730' },
  { name: 'log-level', help: 'trace, debug, info, warn, error or fatal', default: 'info' },
  { name: 'resync-interval', help: 'full resync period (safety net behind link events)', default: '60s' },
  { name: 'group-base', help: 'multicast group base; group = base + VNI (IPv6 such as ff05::, or IPv4 such as 239.0.0.0)', default: 'ff05::' },
  { name: 'ttl', help: 'TTL of VXLAN packets', default: '5' },
  { name: 'dstport', help: 'VXLAN UDP destination port', default: '4789' },
  { name: 'local', help: 'source address of VXLAN packets (same family as the group base); also the address other hosts flood to in unicast mode' },
  {
    name: 'flood',
    help: '"multicast": broadcast and unknown traffic goes to the group (base + VNI); "unicast": to every other host of the network, one copy each (underlays without multicast); every agent of a cloud uses the same',
    default: 'multicast',
  },
  {
    name: 'take-over',
    help: 'adopt the devices of this other vxnetd identity as it appears in their alias (e.g. "host=old etcd=cdf818194e3a8c32 prefix=/v1"), after renaming a host or moving to another etcd cluster',
  },
  { name: 'help', help: 'show this help', boolean: true, commandLineOnly: true },
  { name: 'version', help: 'print the version', boolean: true, commandLineOnly: true },
];

export const VXNETD_USAGE = 'Usage: vxnetd --underlay IFNAME [flags]\n\nMakes the kernel match the virtual networks in etcd: one vxlan<hex> and one br<hex> per network.';

export interface AgentConfig {
  etcd: EtcdOptions;
  prefix: string;
  hostname: string;
  underlay: string;
  scope: 'all' | 'attached';
  /** Routers: radvd and their number (see --role). */
  router?: { number?: number; radvd: string; radvdDir: string };
  metricsListen: string;
  logLevel: string;
  resyncIntervalMs: number;
  /** Another identity whose devices this agent adopts. */
  takeOver?: string;
  groupBase: GroupBase;
  ttl: number;
  dstport: number;
  local?: Buffer;
  flood: FloodMode;
}

/**
 * The configuration as the start-up log line shows it: addresses as text (not a bigint JSON
 * cannot carry, or a Buffer's byte array), and the etcd password never leaves the process.
 */
export function loggableConfig(config: AgentConfig): Record<string, unknown> {
  return {
    ...config,
    groupBase: config.groupBase.text,
    local: config.local ? formatAddress(config.local) : undefined,
    etcd: { ...config.etcd, password: config.etcd.password ? '[redacted]' : undefined },
  };
}

export type ConfigResult = { kind: 'help' } | { kind: 'version' } | { kind: 'run'; config: AgentConfig };

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'];
/** A full resync less often than daily is no safety net; more often than every second, a busy loop at scale. */
const RESYNC_BOUNDS = { minMs: 1000, maxMs: 24 * 3_600_000 };
const IFNAME = /^[^\s/:]{1,15}$/;

export function parseAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv): ConfigResult {
  const { flags, positionals } = parseArgs(argv, VXNETD_FLAGS, env);
  if (flags.get('help') === 'true') return { kind: 'help' };
  if (flags.get('version') === 'true') return { kind: 'version' };
  if (positionals.length) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])} (vxnetd takes flags only)`);

  const underlay = flags.get('underlay');
  if (!underlay) throw new UsageError('--underlay is required (the interface VXLAN traffic leaves on, e.g. --underlay eth0)');
  if (!IFNAME.test(underlay)) throw new UsageError(`--underlay ${JSON.stringify(underlay)} is not a valid interface name`);

  const hostname = flags.get('hostname') || osHostname();
  const hostnameRefused = hostnameProblem(hostname);
  if (hostnameRefused) throw new UsageError(`--hostname: ${hostnameRefused}`);
  const scope = flags.get('scope');
  if (scope !== 'all' && scope !== 'attached') throw new UsageError(`--scope must be "all" or "attached", got ${JSON.stringify(scope)}`);
  const role = flags.get('role');
  if (role !== 'hypervisor' && role !== 'router') throw new UsageError(`--role must be "hypervisor" or "router", got ${JSON.stringify(role)}`);
  const router = role === 'router' ? parseRouter(flags, scope) : undefined;
  if (!router && flags.get('router-number') !== undefined) throw new UsageError('--router-number applies only to --role router');
  const flood = flags.get('flood');
  if (flood !== 'multicast' && flood !== 'unicast') throw new UsageError(`--flood must be "multicast" or "unicast", got ${JSON.stringify(flood)}`);
  const logLevel = flags.get('log-level')!;
  if (!LOG_LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`);

  let groupBase: GroupBase;
  try {
    groupBase = parseGroupBase(flags.get('group-base')!);
  } catch (error) {
    throw new UsageError(`--group-base: ${(error as Error).message}`);
  }
  const takeOver = flags.get('take-over')?.trim();
  if (takeOver !== undefined && takeOver !== '' && !/^(host=\S+ etcd=[0-9a-f]{16} prefix=\S+|id=[0-9a-f]{16})$/.test(takeOver)) {
    throw new UsageError(`--take-over ${JSON.stringify(takeOver)} is not an identity as device aliases show it ("host=NAME etcd=CLUSTER prefix=PREFIX", or "id=HASH")`);
  }
  const localText = flags.get('local');
  const local = localText ? parseLocal(localText, groupBase) : undefined;

  return {
    kind: 'run',
    config: {
      etcd: etcdOptionsFrom(flags),
      prefix: parsePrefix(flags.get('prefix')!),
      hostname,
      underlay,
      scope,
      ...(router ? { router } : {}),
      metricsListen: flags.get('metrics-listen')!,
      logLevel,
      resyncIntervalMs: parseDurationMs('resync-interval', flags.get('resync-interval')!, RESYNC_BOUNDS),
      ...(takeOver ? { takeOver } : {}),
      groupBase,
      ttl: parseInteger('ttl', flags.get('ttl')!, 1, 255),
      dstport: parseInteger('dstport', flags.get('dstport')!, 1, 65535),
      ...(local ? { local } : {}),
      flood,
    },
  };
}

function parseRouter(flags: Map<string, string>, scope: string): NonNullable<AgentConfig['router']> {
  if (scope !== 'all') throw new UsageError('--role router realises every network: it takes no --scope attached');
  const listen = flags.get('metrics-listen')!;
  // A router has addresses on every tenant's bridge: a wildcard listener would be every VM's to reach.
  if (/^(\[::\]|0\.0\.0\.0|\*|):/.test(listen) || /^\d+$/.test(listen)) {
    throw new UsageError(
      `--role router with --metrics-listen ${listen}: a router has addresses on every tenant's bridge, so a wildcard address would let VMs reach /metrics; bind it to a management address (e.g. --metrics-listen [2001:db8:ffff::10]:9730)`,
    );
  }
  const numberText = flags.get('router-number');
  let number: number | undefined;
  if (numberText !== undefined) {
    number = parseRouterNumber(numberText);
    if (number === undefined) throw new UsageError(`--router-number: ${routerNumberProblem(numberText)}`);
  }
  return { ...(number !== undefined ? { number } : {}), radvd: flags.get('radvd')!, radvdDir: flags.get('radvd-dir')! };
}

function parseLocal(text: string, base: GroupBase): Buffer {
  const bytes = parseAddress(text, base.family);
  if (bytes) return bytes;
  const family = base.family === 'inet6' ? 'IPv6' : 'IPv4';
  throw new UsageError(`--local ${JSON.stringify(text)} is not an ${family} address (the group base is ${family})`);
}
