/** The radvd a router agent started: found by its pid file, and stopped only if it is that radvd. */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The pid of the running radvd whose configuration lives in `dir`, or undefined. */
export function radvdPid(dir: string): number | undefined {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dir, 'radvd.pid'), 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    // Only that radvd: a pid reused by another process is never signalled.
    if (state === 'Z' || state === 'X' || !argv.includes(join(dir, 'radvd.conf'))) return undefined;
  } catch {
    return undefined;
  }
  return pid;
}

export async function stopRadvd(dir: string): Promise<void> {
  const pid = radvdPid(dir);
  if (pid === undefined) return;
  process.kill(pid, 'SIGTERM');
  for (let waited = 0; waited < 2_000 && radvdPid(dir) === pid; waited += 50) await new Promise((resolve) => setTimeout(resolve, 50));
  if (radvdPid(dir) === pid) process.kill(pid, 'SIGKILL');
}
