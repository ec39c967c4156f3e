/** Timers for the reconcile loop that run only when a test advances them: no test sleeps. */
import type { Timer, Timers } from '../../src/reconcile/timers.js';

export class FakeTimers implements Timers {
  private time = 0;
  private nextId = 0;
  private readonly pending = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.time;
  }

  after(ms: number, fn: () => void): Timer {
    const id = this.nextId++;
    this.pending.set(id, { at: this.time + Math.max(0, ms), fn });
    return { cancel: () => this.pending.delete(id) };
  }

  /** Timers due within `ms`, each at its time; `settle` runs after each (e.g. the agent's idle()). */
  async advance(ms: number, settle: () => Promise<void> = () => Promise.resolve()): Promise<void> {
    const until = this.time + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.pending) if (entry[1].at <= until && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.pending.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
      await settle();
    }
    this.time = until;
    await settle();
  }

  get scheduled(): number {
    return this.pending.size;
  }
}
