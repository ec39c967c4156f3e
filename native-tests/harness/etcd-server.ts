import { spawn } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { TrackedProcess } from './processes.js';
import { waitFor } from './wait.js';

export interface EtcdServerConfig {
  ipBinary: string;
  etcdBinary: string;
  /** Network namespace etcd runs in; it binds to `clientUrl`'s address there. */
  netns: string;
  /** Member name; also makes `ps` output say which data centre it belongs to. */
  memberName: string;
  dataDir: string;
  /** etcd's own log (stdout and stderr), appended to across restarts. */
  logFile: string;
  clientUrl: string;
  /**
   * For a member of a cluster: its peer URL and the whole cluster (`name=peerUrl,…`). Without
   * them, a single-member cluster whose peer URL is on its namespace's loopback.
   */
  cluster?: { peerUrl: string; initialCluster: string };
  /** Called with every process started, so its owner can kill it on destroy. */
  onSpawn: (p: TrackedProcess) => void;
}

/** One single-member etcd, restartable on the same data directory for outage tests. */
export class EtcdServer {
  private current: TrackedProcess | undefined;

  constructor(private readonly config: EtcdServerConfig) {}

  get pid(): number | undefined {
    return this.current?.running ? this.current.pid : undefined;
  }

  async start(timeoutMs = 20_000): Promise<void> {
    if (this.current?.running) throw new Error(`etcd ${this.config.memberName} is already running (pid ${this.current.pid})`);
    const { netns, memberName, dataDir, clientUrl } = this.config;
    // The peer port only has to be unique inside etcd's own namespace, whose
    // loopback nobody else uses.
    const peerUrl = this.config.cluster?.peerUrl ?? 'http://[::1]:2380';
    const initialCluster = this.config.cluster?.initialCluster ?? `${memberName}=${peerUrl}`;
    const args = [
      '--name', memberName,
      '--data-dir', dataDir,
      '--listen-client-urls', clientUrl,
      '--advertise-client-urls', clientUrl,
      '--listen-peer-urls', peerUrl,
      '--initial-advertise-peer-urls', peerUrl,
      '--initial-cluster', initialCluster,
      '--logger', 'zap',
      '--log-outputs', 'stderr',
    ];
    const log = openSync(this.config.logFile, 'a');
    try {
      // `ip netns exec` execs etcd in place, so the PID we get is etcd's own.
      // etcd reads ETCD_* variables as flags (and refuses duplicates): give
      // it a clean environment so the caller's shell cannot change it.
      const child = spawn(this.config.ipBinary, ['netns', 'exec', netns, this.config.etcdBinary, ...args], {
        stdio: ['ignore', log, log],
        env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
      });
      this.current = new TrackedProcess(child);
      this.config.onSpawn(this.current);
    } finally {
      closeSync(log);
    }

    const started = this.current;
    let outcome: 'healthy' | 'exited';
    try {
      outcome = await waitFor(
        async () => {
          if (!started.running) return 'exited' as const;
          const response = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
          const body = (await response.json()) as { health?: string };
          return body.health === 'true' && ('healthy' as const);
        },
        `etcd at ${clientUrl} to report healthy`,
        timeoutMs,
        100,
      );
    } catch (err) {
      throw new Error(`etcd ${memberName}: ${(err as Error).message}; last log lines:\n${this.logTail()}`);
    }
    if (outcome === 'exited') {
      throw new Error(`etcd ${memberName} exited during start-up; last log lines:\n${this.logTail()}`);
    }
  }

  signal(sig: NodeJS.Signals): void {
    this.current?.signal(sig);
  }

  /** Kills etcd at once (SIGKILL, as a crash would) and waits until it is gone. */
  async kill(): Promise<void> {
    await this.current?.terminate('SIGKILL', 0);
  }

  /** Stops etcd (SIGTERM, SIGKILL after the grace period) and waits until it is gone. */
  async stop(graceMs = 5_000): Promise<void> {
    await this.current?.terminate('SIGTERM', graceMs);
  }

  logTail(lines = 20): string {
    try {
      return readFileSync(this.config.logFile, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
    } catch {
      return '(no etcd log)';
    }
  }
}
