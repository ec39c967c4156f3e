/**
 * The router's radvd (DESIGN.md §8): the only program vxnetd ever starts. vxnetd owns its
 * configuration (generated, checked with `radvd -c` before use), starts it, reloads it (SIGHUP)
 * when the advertised networks change and starts it again if it dies. radvd outlives the agent:
 * stopping it would withdraw every VM's default route, so a stopped or killed vxnetd leaves it
 * running, and the next one adopts it (its pid file, its command line) instead of starting another.
 */
import { spawn } from 'node:child_process';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { renderRadvdConfig, type AdvertisedNetwork } from '../model/radvd-config.js';
import type { Timer, Timers } from '../reconcile/timers.js';

export interface RadvdLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

/** A network as advertised, with the IPAM revision it comes from. */
export type Advertisement = AdvertisedNetwork & { revision: number };

/** What the supervisor needs of the system; tests pass their own. */
export interface RadvdSystem {
  /** Runs a program to its end (radvd itself daemonizes): its exit code and error output. */
  run(argv: readonly string[]): Promise<{ code: number | null; stderr: string }>;
  /** Whether `pid` runs (a zombie does not count) and is a radvd with this configuration file. */
  isOurRadvd(pid: number, configPath: string): boolean;
  signal(pid: number, signal: NodeJS.Signals): void;
  readFile(path: string): string | undefined;
  writeFile(path: string, text: string): void;
  rename(from: string, to: string): void;
}

export interface RadvdOptions {
  binary: string;
  /** Where the configuration, pid file and log live (a runtime directory that outlives the agent). */
  directory: string;
  /** Drop privileges to this user after start (radvd -u), when the system has it. */
  user?: string;
  timers: Timers;
  system?: RadvdSystem;
  /** How often the supervisor looks whether radvd still runs. */
  watchIntervalMs?: number;
}

/** Per network: advertised (at this revision), or why not. */
export type RadvdOutcome = { hex: string; revision: number; prefix: string; withdrawn: boolean } & ({ served: true } | { served: false; reason: string });

/** Coalesces a burst of changes (a full round over many networks) into one reload. */
const APPLY_DELAY_MS = 50;
const WATCH_INTERVAL_MS = 2000;
const PID_FILE_WAIT_MS = 2000;

export class RadvdSupervisor {
  private readonly wanted = new Map<string, Advertisement>();
  private readonly system: RadvdSystem;
  private readonly configPath: string;
  private readonly pidPath: string;
  private pid?: number;
  /** The text radvd runs with. */
  private applied?: string;
  private applyTimer?: Timer;
  private applying?: Promise<void>;
  private again = false;
  private watchTimer?: Timer;
  private stopped = false;
  private restartCount = 0;
  /** Why the last apply failed; undefined after a good one. */
  private failure?: string;

  constructor(
    private readonly options: RadvdOptions,
    private readonly log: RadvdLog,
    /** After each apply: what radvd advertises now, per network, or why it cannot. */
    private readonly report: (outcomes: RadvdOutcome[]) => void,
  ) {
    this.system = options.system ?? nodeRadvdSystem;
    this.configPath = join(options.directory, 'radvd.conf');
    this.pidPath = join(options.directory, 'radvd.pid');
  }

  /** radvd restarted because it had died (vxnetd_radvd_restarts_total). */
  get restarts(): number {
    return this.restartCount;
  }

  /** Networks advertised now (withdrawals included). */
  get advertised(): number {
    return this.wanted.size;
  }

  /** Adopts a radvd left running by an earlier vxnetd, and starts watching it. */
  start(): void {
    this.stopped = false;
    const pid = Number(this.system.readFile(this.pidPath)?.trim());
    if (Number.isInteger(pid) && pid > 0 && this.system.isOurRadvd(pid, this.configPath)) {
      this.pid = pid;
      this.applied = this.system.readFile(this.configPath);
      this.log.info({ op: 'radvd', pid }, `adopted the running radvd (pid ${pid}) of an earlier vxnetd`);
    }
    this.watch();
  }

  /** Stops supervising; radvd keeps running (it outlives the agent on purpose). */
  stop(): void {
    this.stopped = true;
    this.applyTimer?.cancel();
    this.watchTimer?.cancel();
  }

  /** The network's advertisement from now on; undefined: not advertised any more. */
  set(hex: string, advertisement: Advertisement | undefined): void {
    const before = this.wanted.get(hex);
    if (advertisement === undefined) this.wanted.delete(hex);
    else this.wanted.set(hex, advertisement);
    if (before !== undefined && advertisement !== undefined && sameAdvertisement(before, advertisement)) {
      // Nothing radvd sees changed: say again how it stands (the caller's report may have said otherwise meanwhile).
      if (this.failure !== undefined) this.report([{ ...outcomeOf(advertisement), served: false, reason: this.failure }]);
      else if (this.pid !== undefined && !this.applyTimer && !this.applying) this.report([served(advertisement)]);
      return;
    }
    if (before === undefined && advertisement === undefined) return;
    this.scheduleApply();
  }

  /** Resolves when no apply is pending or running (tests). */
  async settled(): Promise<void> {
    while (this.applyTimer || this.applying) {
      if (this.applying) await this.applying;
      else await new Promise((resolve) => setImmediate(resolve));
    }
  }

  private scheduleApply(): void {
    if (this.stopped) return;
    if (this.applying) {
      this.again = true;
      return;
    }
    this.applyTimer ??= this.options.timers.after(APPLY_DELAY_MS, () => {
      this.applyTimer = undefined;
      this.applying = this.apply().finally(() => {
        this.applying = undefined;
        if (this.again) {
          this.again = false;
          this.scheduleApply();
        }
      });
    });
  }

  private async apply(): Promise<void> {
    const advertisements = [...this.wanted.values()];
    const text = renderRadvdConfig(advertisements);
    const running = this.pid !== undefined && this.system.isOurRadvd(this.pid, this.configPath);
    if (running && text === this.applied) return this.report(advertisements.map(served));
    try {
      if (advertisements.length === 0) {
        // radvd refuses a configuration without interfaces: with nothing to advertise it goes.
        if (running) this.system.signal(this.pid!, 'SIGTERM');
        this.pid = undefined;
        this.applied = undefined;
        return;
      }
      const candidate = `${this.configPath}.new`;
      this.system.writeFile(candidate, text);
      const check = await this.system.run([this.options.binary, '-c', '-C', candidate]);
      if (check.code !== 0) throw new Error(`radvd -c refused the generated configuration: ${lastLine(check.stderr)}`);
      this.system.rename(candidate, this.configPath);
      if (running) {
        this.system.signal(this.pid!, 'SIGHUP');
        this.log.info({ op: 'radvd', pid: this.pid, networks: advertisements.length }, `radvd reloaded: ${advertisements.length} networks advertised`);
      } else {
        await this.launch();
      }
      this.applied = text;
      this.failure = undefined;
      this.report(advertisements.map(served));
    } catch (error) {
      const reason = (error as Error).message;
      this.failure = reason;
      this.log.error({ op: 'radvd', err: reason }, `radvd: ${reason}`);
      this.report(advertisements.map((a) => ({ ...outcomeOf(a), served: false, reason })));
    }
  }

  private async launch(): Promise<void> {
    const { directory, user } = this.options;
    const argv = [this.options.binary, '-C', this.configPath, '-p', this.pidPath, '-m', 'logfile', '-l', join(directory, 'radvd.log'), ...(user ? ['-u', user] : [])];
    const started = await this.system.run(argv);
    if (started.code !== 0) throw new Error(`radvd did not start (exit ${started.code}): ${lastLine(started.stderr)}`);
    // It daemonizes: the pid file names the process that stays.
    const deadline = this.options.timers.now() + PID_FILE_WAIT_MS;
    for (;;) {
      const pid = Number(this.system.readFile(this.pidPath)?.trim());
      if (Number.isInteger(pid) && pid > 0 && this.system.isOurRadvd(pid, this.configPath)) {
        this.pid = pid;
        this.log.info({ op: 'radvd', pid }, `radvd started (pid ${pid})`);
        return;
      }
      if (this.options.timers.now() >= deadline) throw new Error(`radvd started but left no running process in ${this.pidPath}`);
      await new Promise<void>((resolve) => this.options.timers.after(50, resolve));
    }
  }

  private watch(): void {
    if (this.stopped) return;
    this.watchTimer = this.options.timers.after(this.options.watchIntervalMs ?? WATCH_INTERVAL_MS, () => {
      if (this.pid !== undefined && !this.applying && !this.system.isOurRadvd(this.pid, this.configPath)) {
        this.log.warn({ op: 'radvd', pid: this.pid }, `radvd (pid ${this.pid}) is gone; starting it again`);
        this.pid = undefined;
        this.applied = undefined;
        this.restartCount++;
        this.scheduleApply();
      }
      this.watch();
    });
  }
}

function outcomeOf({ hex, revision, prefix, withdrawn }: Advertisement) {
  return { hex, revision, prefix, withdrawn: withdrawn === true };
}

function served(advertisement: Advertisement): RadvdOutcome {
  return { ...outcomeOf(advertisement), served: true };
}

function sameAdvertisement(a: Advertisement, b: Advertisement): boolean {
  return renderRadvdConfig([a]) === renderRadvdConfig([b]);
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1)?.slice(0, 300) || 'no message';
}

export const nodeRadvdSystem: RadvdSystem = {
  run: (argv) =>
    new Promise((resolve) => {
      // stdin and stdout closed: the daemon keeps nothing of ours open; its log goes to its own file.
      const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
      let stderr = '';
      child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('error', (error) => resolve({ code: null, stderr: error.message }));
      // 'exit', not 'close': the daemon radvd forks may hold the error pipe open for as long as it runs.
      child.on('exit', (code) => setImmediate(() => resolve({ code, stderr })));
    }),
  isOurRadvd(pid, configPath) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // Field 3, after the command name in parentheses: Z (zombie) or X (dead) is not running.
      const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
      if (state === 'Z' || state === 'X') return false;
      const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
      return (argv[0] ?? '').endsWith('radvd') && argv.includes(configPath);
    } catch {
      return false;
    }
  },
  signal: (pid, signal) => void process.kill(pid, signal),
  readFile(path) {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return undefined;
    }
  },
  writeFile: (path, text) => writeFileSync(path, text, { mode: 0o644 }),
  rename: (from, to) => renameSync(from, to),
};
