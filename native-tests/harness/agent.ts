import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { inspect } from 'node:util';
import { TrackedProcess, type ExitStatus } from './processes.js';
import { sleep } from './wait.js';

export interface AgentHandle {
  pid: number;
  host: string;
  /** Base URL of the agent's HTTP server, e.g. http://[fd00:1a2b::2]:9730 */
  metricsUrl: string;
  /** Parsed JSON log lines so far; lines that are not JSON are kept as {raw, stream}. */
  logs(): any[];
  /** Resolves with the first log line (past or future) matching `pred`; rejects on timeout or agent exit. */
  waitForLog(pred: (line: any) => boolean, timeoutMs?: number): Promise<any>;
  /** Polls GET /readyz until it answers 200; rejects on timeout or agent exit. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Sends `signal` (default SIGTERM), SIGKILL after 6 s, and resolves with the exit status. */
  stop(signal?: NodeJS.Signals): Promise<ExitStatus>;
  /** Resolves when the process has exited and all its output has been read. */
  exited: Promise<ExitStatus>;
}

export interface AgentLaunch {
  ipBinary: string;
  netns: string;
  host: string;
  /** Full command line run inside `netns`, starting with the node binary. */
  command: string[];
  env: NodeJS.ProcessEnv;
  metricsUrl: string;
  onSpawn: (p: TrackedProcess) => void;
}

const STOP_GRACE_MS = 6_000;

type LogWaiter = { pred: (line: any) => boolean; resolve: (line: any) => void };

export class AgentProcess implements AgentHandle {
  readonly pid: number;
  readonly host: string;
  readonly metricsUrl: string;
  readonly exited: Promise<ExitStatus>;

  private readonly process: TrackedProcess;
  private readonly lines: any[] = [];
  private readonly waiters = new Set<LogWaiter>();
  private exitStatus: ExitStatus | undefined;

  constructor(launch: AgentLaunch) {
    this.host = launch.host;
    this.metricsUrl = launch.metricsUrl;
    // `ip netns exec` execs the command in place: the PID is the agent's own,
    // so signals reach it directly.
    const child = spawn(launch.ipBinary, ['netns', 'exec', launch.netns, ...launch.command], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: launch.env,
    });
    this.process = new TrackedProcess(child);
    launch.onSpawn(this.process);
    if (child.pid === undefined) throw new Error(`could not start the agent for ${launch.host}: ${launch.command.join(' ')}`);
    this.pid = child.pid;

    const stdoutDone = this.collectLines(child.stdout!, 'stdout');
    const stderrDone = this.collectLines(child.stderr!, 'stderr');
    // Only report the exit once every line has been read, so that a test
    // awaiting `exited` sees the agent's last words in logs().
    this.exited = Promise.all([this.process.exited, stdoutDone, stderrDone]).then(([status]) => {
      this.exitStatus = status;
      return status;
    });
  }

  logs(): any[] {
    return [...this.lines];
  }

  waitForLog(pred: (line: any) => boolean, timeoutMs = 10_000): Promise<any> {
    const seen = this.lines.find((line) => safeMatch(pred, line));
    if (seen !== undefined) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter: LogWaiter = {
        pred,
        resolve: (line) => {
          finish();
          resolve(line);
        },
      };
      const finish = () => {
        clearTimeout(timer);
        this.waiters.delete(waiter);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for a log line from agent ${this.host} matching ${pred.toString()}\n${this.logTail()}`));
      }, timeoutMs);
      this.waiters.add(waiter);
      void this.exited.then((status) => {
        if (!this.waiters.has(waiter)) return;
        finish();
        reject(new Error(`agent ${this.host} exited (${describeExit(status)}) before logging a line matching ${pred.toString()}\n${this.logTail()}`));
      });
    });
  }

  async waitReady(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer yet';
    for (;;) {
      if (this.exitStatus || !this.process.running) {
        await this.exited;
        throw new Error(`agent ${this.host} exited (${describeExit(this.exitStatus!)}) before becoming ready\n${this.logTail()}`);
      }
      try {
        const response = await fetch(`${this.metricsUrl}/readyz`, { signal: AbortSignal.timeout(1_000) });
        if (response.status === 200) return;
        last = `HTTP ${response.status}: ${(await response.text()).slice(0, 200)}`;
      } catch (err) {
        last = (err as Error).message;
      }
      if (Date.now() >= deadline) {
        throw new Error(`agent ${this.host} not ready after ${timeoutMs} ms (GET ${this.metricsUrl}/readyz: ${last})\n${this.logTail()}`);
      }
      await sleep(100);
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<ExitStatus> {
    await this.process.terminate(signal, STOP_GRACE_MS);
    return this.exited;
  }

  /** The last log lines, for error messages: a failed wait is hard to debug without them. */
  logTail(count = 15): string {
    const tail = this.lines.slice(-count).map((l) => (l.raw !== undefined ? `[${l.stream}] ${l.raw}` : JSON.stringify(l)));
    return `last ${tail.length} log lines of agent ${this.host}:\n${tail.join('\n') || '(none)'}`;
  }

  private collectLines(stream: Readable, name: 'stdout' | 'stderr'): Promise<void> {
    const reader = createInterface({ input: stream, crlfDelay: Infinity });
    reader.on('line', (text) => this.addLine(parseLogLine(text, name)));
    return new Promise((resolve) => reader.once('close', () => resolve()));
  }

  private addLine(line: any): void {
    this.lines.push(line);
    for (const waiter of [...this.waiters]) {
      if (safeMatch(waiter.pred, line)) waiter.resolve(line);
    }
  }
}

/** A predicate that trips over an unexpected line shape simply does not match it. */
function safeMatch(pred: (line: any) => boolean, line: any): boolean {
  try {
    return Boolean(pred(line));
  } catch {
    return false;
  }
}

function parseLogLine(text: string, stream: 'stdout' | 'stderr'): any {
  if (stream === 'stdout' && text.startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch {
      // fall through: kept raw
    }
  }
  return { raw: text, stream };
}

function describeExit(status: ExitStatus): string {
  return status.signal ? `signal ${status.signal}` : `code ${inspect(status.code)}`;
}
