/**
 * Work for one key is serialised; different keys run in parallel up to a
 * bound. Scheduling a key that is running marks it to run once more after,
 * so bursts of events for one network coalesce. Urgent keys (a change from
 * etcd, a device broken by hand) go before the bulk of a full resync.
 */
export class KeyedWorkQueue<Hint> {
  private readonly running = new Set<string>();
  private readonly queued = new Map<string, Hint | undefined>();
  private readonly urgent = new Map<string, Hint | undefined>();
  private readonly rerun = new Set<string>();
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly concurrency: number,
    private readonly work: (key: string, hint: Hint | undefined) => Promise<void>,
    private readonly onIdle: () => void = () => undefined,
  ) {}

  /** hint (e.g. fresh kernel state) is dropped if the key has to wait behind a running job. */
  schedule(key: string, hint?: Hint): void {
    if (this.running.has(key)) {
      this.rerun.add(key);
      return;
    }
    if (!this.urgent.has(key)) this.queued.set(key, this.queued.has(key) ? undefined : hint);
    this.pump();
  }

  /** Like schedule(), ahead of everything queued without urgency; a hint already queued is dropped. */
  scheduleUrgent(key: string): void {
    if (this.running.has(key)) {
      this.rerun.add(key);
      return;
    }
    this.queued.delete(key);
    this.urgent.set(key, undefined);
    this.pump();
  }

  get size(): number {
    return this.running.size + this.queued.size + this.urgent.size;
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.running.size < this.concurrency && (this.urgent.size || this.queued.size)) {
      const from = this.urgent.size ? this.urgent : this.queued;
      const [key, hint] = from.entries().next().value as [string, Hint | undefined];
      from.delete(key);
      this.running.add(key);
      void this.work(key, hint)
        .catch(() => undefined)
        .finally(() => {
          this.running.delete(key);
          if (this.rerun.delete(key)) this.urgent.set(key, undefined);
          this.pump();
          if (this.size === 0) {
            this.onIdle();
            const waiters = this.idleWaiters;
            this.idleWaiters = [];
            for (const resolve of waiters) resolve();
          }
        });
    }
  }
}
