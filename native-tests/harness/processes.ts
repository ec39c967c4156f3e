import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { constants as osConstants } from 'node:os';
import { delimiter, join } from 'node:path';

export interface CommandResult {
  stdout: string;
  stderr: string;
  code: number;
}

export interface ExitStatus {
  code: number | null;
  signal: string | null;
}

/** Exit code reported for a command the harness killed because it ran too long (as timeout(1) does). */
export const TIMED_OUT_CODE = 124;
/** Exit code reported for a command that could not be started at all (as a shell does). */
export const NOT_STARTED_CODE = 127;

/**
 * A child process together with a promise of its exit, created at spawn time
 * so that an exit can never be missed by a listener attached too late.
 */
export class TrackedProcess {
  readonly exited: Promise<ExitStatus>;

  constructor(readonly child: ChildProcess) {
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      // A failed spawn emits 'error' and never 'exit'.
      child.once('error', () => {
        if (child.pid === undefined) resolve({ code: NOT_STARTED_CODE, signal: null });
      });
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  get running(): boolean {
    return this.child.pid !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Sends a signal by PID; a process that is already gone is not an error. */
  signal(sig: NodeJS.Signals): void {
    if (!this.running || this.pid === undefined) return;
    try {
      process.kill(this.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  /**
   * Asks the process to stop with `sig`, then SIGKILLs it after `graceMs`.
   * SIGCONT first, because a process frozen by a test (SIGSTOP) would never
   * act on SIGTERM.
   */
  async terminate(sig: NodeJS.Signals = 'SIGTERM', graceMs = 6_000): Promise<ExitStatus> {
    if (this.running) {
      this.signal('SIGCONT');
      this.signal(sig);
      const timer = setTimeout(() => this.signal('SIGKILL'), graceMs);
      try {
        return await this.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    return this.exited;
  }
}

/**
 * Runs a command to completion and collects its output. Never rejects: a
 * failure to start gives code 127, a timeout kills the process and gives 124,
 * so callers decide what counts as failure.
 */
export async function runCommand(
  argv: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; onSpawn?: (p: TrackedProcess) => void } = {},
): Promise<CommandResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const spawnOptions: SpawnOptions = { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env };
  const tracked = new TrackedProcess(spawn(argv[0]!, argv.slice(1), spawnOptions));
  opts.onSpawn?.(tracked);
  const { child } = tracked;

  let stdout = '';
  let stderr = '';
  let spawnError: Error | undefined;
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.on('error', (err) => (spawnError = err));

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    tracked.signal('SIGKILL');
  }, timeoutMs);

  // 'close' (not 'exit') so that all output has been read.
  const closed = new Promise<void>((resolve) => {
    child.once('close', () => resolve());
    child.once('error', () => {
      if (child.pid === undefined) resolve();
    });
  });
  await closed;
  clearTimeout(timer);

  if (spawnError && child.pid === undefined) {
    return { stdout, stderr: `${stderr}[harness] could not start ${argv[0]}: ${spawnError.message}\n`, code: NOT_STARTED_CODE };
  }
  if (timedOut) {
    return { stdout, stderr: `${stderr}[harness] killed after ${timeoutMs} ms: ${argv.join(' ')}\n`, code: TIMED_OUT_CODE };
  }
  // Killed by a signal: report 128 + signal number, as a shell does.
  const code = child.exitCode ?? 128 + (child.signalCode ? osConstants.signals[child.signalCode] : 0);
  return { stdout, stderr, code };
}

export function describeFailure(argv: string[], result: CommandResult): string {
  const output = (result.stderr.trim() || result.stdout.trim()).slice(0, 2_000);
  return `\`${argv.join(' ')}\` failed with exit code ${result.code}${output ? `: ${output}` : ''}`;
}

function findOnPath(binary: string): string | undefined {
  // Root's PATH normally has the sbin directories, but a test runner started
  // from a user shell through sudo may not: look there too.
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = join(dir, binary);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not in this directory
    }
  }
  return undefined;
}

/** The Debian package that provides each external program the harness runs. */
const REQUIRED_PROGRAMS: Record<string, string> = {
  ip: 'iproute2',
  etcd: 'etcd-server',
  ping: 'iputils-ping',
};

/** A program only some tests need: its path, or an error naming the Debian package to install. */
export function requireOptionalProgram(binary: string, debianPackage: string): string {
  const path = findOnPath(binary);
  if (!path) throw new Error(`\`${binary}\` not found: apt-get install ${debianPackage} (or run scripts/setup)`);
  return path;
}

/** Resolved absolute paths of the external programs, checked once. */
export interface Programs {
  ip: string;
  etcd: string;
  ping: string;
}

let programs: Programs | undefined;

/** Fails with an actionable message when the tests cannot run on this machine. */
export function requirePrograms(): Programs {
  if (programs) return programs;
  if (process.getuid?.() !== 0) {
    throw new Error('native tests need root (network namespaces, veth, vxlan): run them as root');
  }
  const found: Partial<Programs> = {};
  const missing: string[] = [];
  for (const [binary, debianPackage] of Object.entries(REQUIRED_PROGRAMS)) {
    const path = findOnPath(binary);
    if (path) found[binary as keyof Programs] = path;
    else missing.push(`\`${binary}\` not found: apt-get install ${debianPackage}`);
  }
  if (missing.length > 0) throw new Error(`native tests cannot run: ${missing.join('; ')}`);
  programs = found as Programs;
  return programs;
}
