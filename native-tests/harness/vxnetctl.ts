/** The real vxnetctl (the built one in dist/), pointed at a data centre's etcd and prefix. */
import { fileURLToPath } from 'node:url';
import { runCommand, type CommandResult } from './processes.js';

const VXNETCTL = fileURLToPath(new URL('../../dist/cli/vxnetctl.js', import.meta.url));

/** Runs `vxnetctl ARGS` with a clean environment: PATH, and the data centre's endpoints and prefix as VXNETD_* variables. */
export function runVxnetctl(dc: { etcdEndpoints: readonly string[]; prefix: string }, args: string[], timeoutMs = 30_000): Promise<CommandResult> {
  return runCommand([process.execPath, VXNETCTL, ...args], {
    timeoutMs,
    env: { PATH: process.env.PATH, VXNETD_ETCD_ENDPOINTS: dc.etcdEndpoints.join(','), VXNETD_PREFIX: dc.prefix },
  });
}
