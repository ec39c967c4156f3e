/**
 * A single etcd on loopback, on free ports, with its own data directory: for tests that need a
 * real etcd but no namespaces (vxnetctl, the desired-state source in-process).
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NOT_STARTED_CODE, runCommand, TrackedProcess } from './processes.js';
import { waitFor } from './wait.js';

export interface LoopbackEtcd {
  url: string;
  process: TrackedProcess;
  /** Stops etcd (SIGCONT first, in case a test froze it) and removes its directory. */
  destroy(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts etcd with `extraArgs` added to its flags and waits until it reports healthy. */
export async function startLoopbackEtcd(extraArgs: string[] = []): Promise<LoopbackEtcd> {
  const probe = await runCommand(['etcd', '--version'], { timeoutMs: 10_000 });
  if (probe.code === NOT_STARTED_CODE) throw new Error('etcd not found on PATH: install Debian package etcd-server');
  const dir = mkdtempSync(join(tmpdir(), 'vxnetd-loopback-etcd-'));
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const url = `http://127.0.0.1:${clientPort}`;
  const logFile = join(dir, 'etcd.log');
  const log = openSync(logFile, 'a');
  let etcd: TrackedProcess;
  try {
    etcd = new TrackedProcess(
      spawn(
        'etcd',
        [
          '--data-dir', join(dir, 'data'),
          '--listen-client-urls', url,
          '--advertise-client-urls', url,
          '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
          '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
          '--initial-cluster', `default=http://127.0.0.1:${peerPort}`,
          ...extraArgs,
        ],
        // etcd reads ETCD_* variables as flags: keep the caller's out.
        { stdio: ['ignore', log, log], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' } },
      ),
    );
  } finally {
    closeSync(log);
  }
  const destroy = async () => {
    await etcd.terminate('SIGTERM', 5_000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        if (!etcd.running) throw new Error('etcd exited');
        const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1_000) });
        return ((await response.json()) as { health?: string }).health === 'true';
      },
      `etcd at ${url} to report healthy`,
      20_000,
      100,
    );
  } catch (error) {
    const tail = readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-20).join('\n');
    await destroy();
    throw new Error(`${(error as Error).message}; etcd log:\n${tail}`);
  }
  return { url, process: etcd, destroy };
}
