/**
 * Link events are paused while many networks are applied at once: the agent's own changes
 * (16 notifications per network created) could overflow the event socket, and an overflow
 * aborts the process inside the netlink binding (NOTES-dependencies.md). Once the loop has
 * nothing left to do, events resume and one full round finds whatever changed meanwhile.
 */
import type { Kernel } from '../kernel/rtnl.js';

/**
 * Concurrent applies, not queued objects or applies per busy period: a full round queues every
 * network but changes few, and a steady stream of puts keeps the queue busy one network at a time.
 */
export const BULK_APPLIES = 8;

export interface BulkApplyLog {
  info(fields: Record<string, unknown>, msg: string): void;
}

export class BulkApplyGuard {
  private running = 0;
  private paused = false;

  constructor(
    private readonly kernel: Pick<Kernel, 'pauseEvents' | 'resumeEvents'>,
    private readonly log: BulkApplyLog,
    /** Called when a bulk apply begins (true) and ends (false): many statuses change at once meanwhile. */
    private readonly changed: (active: boolean) => void,
    /** Asks for the full round that follows a bulk apply. */
    private readonly fullRound: (reason: string) => void,
  ) {}

  applyStarted(): void {
    if (++this.running < BULK_APPLIES || this.paused) return;
    this.paused = true;
    this.kernel.pauseEvents();
    this.changed(true);
    this.log.info({ op: 'bulk', applies: this.running }, 'bulk apply: link events paused until the queue drains');
  }

  applyEnded(): void {
    this.running--;
  }

  /** The reconcile loop has nothing queued or running. */
  loopIdle(): void {
    if (!this.paused) return;
    this.paused = false;
    this.kernel.resumeEvents();
    this.changed(false);
    // Whatever changed by hand while events were paused is found by one dump.
    this.fullRound('link events resumed after bulk apply');
  }
}
