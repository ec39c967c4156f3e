/**
 * Flag parsing shared by vxnetd and vxnetctl. Every flag has an environment
 * variable (VXNETD_ + upper snake case); the command line wins over the
 * environment, the environment over the default.
 */

export interface FlagSpec {
  name: string;
  help: string;
  default?: string;
  /** Flags without a value (e.g. --json); true when present. */
  boolean?: boolean;
  secret?: boolean;
  /** Not read from the environment (e.g. --help). */
  commandLineOnly?: boolean;
  /** May be given more than once on the command line: the values are joined with commas. */
  repeatable?: boolean;
}

export class UsageError extends Error {
  override name = 'UsageError';
}

export function envName(flag: string): string {
  return `VXNETD_${flag.replace(/-/g, '_').toUpperCase()}`;
}

export interface ParsedArgs {
  flags: Map<string, string>;
  positionals: string[];
}

export function parseArgs(argv: readonly string[], specs: readonly FlagSpec[], env: NodeJS.ProcessEnv): ParsedArgs {
  const byName = new Map(specs.map((spec) => [spec.name, spec]));
  const flags = new Map<string, string>();
  const positionals: string[] = [];
  // A repeatable flag's first use on the command line replaces its environment value; later ones add to it.
  const repeated = new Set<string>();
  for (const spec of specs) {
    const fromEnv = spec.commandLineOnly ? undefined : env[envName(spec.name)];
    if (fromEnv !== undefined && fromEnv !== '') flags.set(spec.name, fromEnv);
    else if (spec.default !== undefined) flags.set(spec.name, spec.default);
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('--')) {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf('=');
    const name = arg.slice(2, eq === -1 ? undefined : eq);
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`unknown flag --${name} (see --help)`);
    if (spec.boolean) {
      flags.set(name, eq === -1 ? 'true' : arg.slice(eq + 1));
      continue;
    }
    let value: string | undefined;
    if (eq !== -1) value = arg.slice(eq + 1);
    else {
      value = argv[i + 1];
      i++;
    }
    if (value === undefined) throw new UsageError(`flag --${name} needs a value`);
    if (spec.repeatable && repeated.has(name)) value = `${flags.get(name)},${value}`;
    repeated.add(name);
    flags.set(name, value);
  }
  return { flags, positionals };
}

export function helpText(usage: string, specs: readonly FlagSpec[]): string {
  const lines = [usage, '', 'Flags (each also read from the environment variable shown):'];
  for (const spec of specs) {
    const head = `  --${spec.name}${spec.boolean ? '' : ' VALUE'}`;
    lines.push(`${head.padEnd(30)} ${spec.commandLineOnly ? '' : envName(spec.name)}`.trimEnd());
    lines.push(`      ${spec.help}${spec.default !== undefined ? ` (default: ${spec.default})` : ''}`);
  }
  return lines.join('\n');
}

export function parseInteger(name: string, text: string, min: number, max: number): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`--${name} must be a whole number, got ${JSON.stringify(text)}`);
  const value = Number(text);
  if (value < min || value > max) throw new UsageError(`--${name} must be between ${min} and ${max}, got ${value}`);
  return value;
}

/** Durations such as 60s, 500ms, 5m, or a bare number of seconds. */
/** A duration within [minMs, maxMs]: Node turns a timer over 2^31-1 ms into 1 ms, and a tiny one is a busy loop. */
export function parseDurationMs(name: string, text: string, bounds: { minMs: number; maxMs: number } = { minMs: 1, maxMs: 2 ** 31 - 1 }): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(text.trim());
  if (!match) throw new UsageError(`--${name} must be a duration such as 60s, 500ms or 5m, got ${JSON.stringify(text)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? 's') as 'ms' | 's' | 'm' | 'h'];
  const value = Number(match[1]) * unit;
  if (!(value >= bounds.minMs && value <= bounds.maxMs)) {
    throw new UsageError(`--${name} must be between ${formatDuration(bounds.minMs)} and ${formatDuration(bounds.maxMs)}, got ${JSON.stringify(text)}`);
  }
  return value;
}

function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

export const ETCD_FLAGS: readonly FlagSpec[] = [
  { name: 'etcd-endpoints', help: 'comma-separated etcd URLs (every member: a dead one is left for the next)', default: 'http://127.0.0.1:2379' },
  { name: 'etcd-ca', help: "CA certificate file for etcd TLS; without it, etcd's certificate is checked against Node's default trusted CAs (Mozilla's list, plus NODE_EXTRA_CA_CERTS)" },
  { name: 'etcd-cert', help: 'client certificate file for etcd TLS' },
  { name: 'etcd-key', help: 'client key file for etcd TLS' },
  { name: 'etcd-user', help: 'etcd user name' },
  { name: 'etcd-password', help: 'etcd password (prefer the environment variable)', secret: true },
  { name: 'prefix', help: 'etcd key prefix', default: '/v1' },
];

export function etcdOptionsFrom(flags: Map<string, string>) {
  const endpoints = (flags.get('etcd-endpoints') ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (endpoints.length === 0) throw new UsageError('--etcd-endpoints must name at least one URL');
  for (const endpoint of endpoints) {
    if (!/^https?:\/\//.test(endpoint)) throw new UsageError(`etcd endpoint ${JSON.stringify(endpoint)} must start with http:// or https://`);
  }
  const optional = (name: string) => flags.get(name) || undefined;
  const ca = optional('etcd-ca');
  const cert = optional('etcd-cert');
  const key = optional('etcd-key');
  const user = optional('etcd-user');
  const password = optional('etcd-password');
  if ((cert && !key) || (key && !cert)) throw new UsageError('--etcd-cert and --etcd-key go together');
  return {
    endpoints,
    ...(ca ? { ca } : {}),
    ...(cert ? { cert } : {}),
    ...(key ? { key } : {}),
    ...(user ? { user } : {}),
    ...(password ? { password } : {}),
  };
}

export function parsePrefix(text: string): string {
  if (!text.startsWith('/') || text.endsWith('/') || text.includes('//')) {
    throw new UsageError(`--prefix must start with / and not end with /, got ${JSON.stringify(text)}`);
  }
  return text;
}
