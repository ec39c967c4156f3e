/**
 * Safety net for when a test run dies without reaching afterAll: a process
 * 'exit' or a SIGINT/SIGTERM/SIGHUP destroys every live data centre
 * synchronously. Only synchronous work runs in an 'exit' handler, which is
 * why destroyers provide a separate `destroySync` (spawnSync, SIGKILL).
 */

export interface SyncDestroyable {
  destroySync(): void;
}

const live = new Set<SyncDestroyable>();
let installed = false;

export function registerForLastResortCleanup(item: SyncDestroyable): void {
  install();
  live.add(item);
}

export function unregisterFromLastResortCleanup(item: SyncDestroyable): void {
  live.delete(item);
}

function destroyAllSync(): void {
  for (const item of [...live]) {
    live.delete(item);
    try {
      item.destroySync();
    } catch (err) {
      process.stderr.write(`[native-tests harness] last-resort cleanup failed: ${String(err)}\n`);
    }
  }
}

function install(): void {
  if (installed) return;
  installed = true;
  process.on('exit', destroyAllSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = () => {
      destroyAllSync();
      process.off(sig, onSignal);
      // Listening for a signal disables Node's default "die"; if nobody else
      // (e.g. the test runner) handles it, die by the same signal as intended.
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, onSignal);
  }
}
