/**
 * Work for one key is serialised; different keys run in parallel up to a
 * bound. Scheduling a key that is running marks it to run once more after,
 * so bursts of events for one network coalesce.
 */
export class KeyedWorkQueue<Hint> {
  private readonly running = new Set<string>();
  private readonly queued = new Map<string, Hint | undefined>();
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
    const already = this.queued.has(key);
    this.queued.set(key, already ? undefined : hint);
    this.pump();
  }

  get size(): number {
    return this.running.size + this.queued.size;
  }

  /** Resolves when nothing is queued or running. */
  idle(): Promise<void> {
    if (this.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private pump(): void {
    while (this.running.size < this.concurrency && this.queued.size) {
      const [key, hint] = this.queued.entries().next().value as [string, Hint | undefined];
      this.queued.delete(key);
      this.running.add(key);
      void this.work(key, hint)
        .catch(() => undefined)
        .finally(() => {
          this.running.delete(key);
          if (this.rerun.delete(key)) this.queued.set(key, undefined);
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
