/**
 * The one reconcile loop for every kind of kernel object (device pairs now; bridge addresses, FDB
 * entries next). Shaped after cilium statedb's reconciler: a kind supplies how to read the kernel
 * for a full round and how to make one object match; the loop owns the per-key queue,
 * incremental and full rounds, a status per object, retries with capped, jittered backoff, and
 * the figures behind the metrics. A new kind is one `register()` call: nothing here changes.
 */
import { KeyedWorkQueue } from './queue.js';
import { backoffDelay, RETRY_BACKOFF, systemTimers, type BackoffPolicy, type Timer, type Timers } from './timers.js';

/** What one attempt at one object came to. */
export type Outcome =
  /** The kernel matches (or was made to match) the desired state; `forget`: the object is gone everywhere, drop its status. */
  | { result: 'done'; changed: boolean; forget?: boolean }
  /** The kernel refused or something is in the way: tried again with backoff. */
  | { result: 'failed'; reason: string }
  /** Waits for a change of the desired state or of a fact (a bad spec, no underlay): no retry. */
  | { result: 'blocked'; reason: string }
  /** What the kind knew of the kernel was stale (an exclusive create hit EEXIST): once more, at once, from a fresh read. */
  | { result: 'stale' };

export interface ObjectKind<Hint> {
  /** Names the kind in logs, metrics and the loop's keys. */
  readonly name: string;
  /**
   * A full round's read of the kernel: every key to visit — the desired ones and, so that what
   * is no longer desired gets pruned, every one the kernel holds — each with what the kernel has
   * for it, which reconcile() then need not read again.
   */
  observeAll(): Promise<Map<string, Hint | undefined>>;
  /** Makes one object match: create or update it when desired, delete it when not. */
  reconcile(key: string, hint: Hint | undefined): Promise<Outcome>;
}

export type ObjectState = 'pending' | 'done' | 'failed' | 'blocked';

export interface ObjectStatus {
  state: ObjectState;
  reason?: string;
  /** Failed attempts in a row. */
  failures: number;
  /** When the next retry of a failed object runs (Timers.now() time). */
  retryAt?: number;
}

export interface LoopLog {
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

export interface LoopHooks {
  /** Seconds one attempt at one object took. */
  observeAttempt?(kind: string, seconds: number, result: Outcome['result']): void;
  /** A full round finished: ok false when reading the kernel failed (it is retried with backoff). */
  fullRoundDone?(round: number, ok: boolean): void;
  /** Nothing queued or running any more. */
  idle?(): void;
}

export interface LoopOptions {
  /** Objects reconciled at once, across kinds. */
  concurrency: number;
  /** Period of the safety-net full round; 0: none. */
  fullRoundIntervalMs: number;
  retry?: BackoffPolicy;
  timers?: Timers;
  random?: () => number;
  hooks?: LoopHooks;
}

/** How a full round treats objects waiting out a retry delay. */
export interface FullRoundOptions {
  /**
   * Try failed objects now instead of at their retry time: for rounds caused by a new list of the
   * desired state or a changed fact (the cause of a failure may be gone). A periodic round does
   * not, so that many failing objects cost a trickle of requests, not one burst per round.
   */
  retryFailedNow?: boolean;
}

interface Entry {
  kind: ObjectKind<unknown>;
  key: string;
  status: ObjectStatus;
  retryTimer?: Timer;
}

/** Events that arrived while their object was being reconciled: judged once it is done. */
type StillNeeded = () => boolean;

const SEPARATOR = '\u0000';
/** Stale reads in a row before an object counts as failed: a kind that is always stale must not spin. */
const MAX_STALE_RUNS = 3;

export class ReconcileLoop {
  private readonly kinds = new Map<string, ObjectKind<unknown>>();
  private readonly entries = new Map<string, Entry>();
  private readonly queue: KeyedWorkQueue<unknown>;
  private readonly timers: Timers;
  private readonly retry: BackoffPolicy;
  private readonly random: () => number;
  private readonly hooks: LoopHooks;
  /** Per object being reconciled, the newest poke about each of its parts. */
  private readonly pokedWhileRunning = new Map<string, Map<string, StillNeeded>>();
  private readonly running = new Set<string>();
  private fullRoundRunning?: Promise<boolean>;
  private fullRoundAgain?: { reason: string; options: FullRoundOptions };
  private fullRoundFailures = 0;
  private fullRoundRetry?: Timer;
  private periodicTimer?: Timer;
  private rounds = 0;
  private stopped = true;
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly log: LoopLog,
    private readonly options: LoopOptions,
  ) {
    this.timers = options.timers ?? systemTimers;
    this.retry = options.retry ?? RETRY_BACKOFF;
    this.random = options.random ?? Math.random;
    this.hooks = options.hooks ?? {};
    this.queue = new KeyedWorkQueue(options.concurrency, (id, hint) => this.attempt(id, hint), () => this.queueDrained());
  }

  register<Hint>(kind: ObjectKind<Hint>): void {
    if (this.kinds.has(kind.name)) throw new Error(`reconcile kind ${kind.name} registered twice`);
    this.kinds.set(kind.name, kind as ObjectKind<unknown>);
  }

  /** Starts the periodic full round. */
  start(): void {
    this.stopped = false;
    this.schedulePeriodic();
  }

  /** No new work starts; what runs finishes. */
  stop(): void {
    this.stopped = true;
    this.periodicTimer?.cancel();
    this.fullRoundRetry?.cancel();
    for (const entry of this.entries.values()) entry.retryTimer?.cancel();
  }

  /** Reconcile one object soon, ahead of a full round's bulk; `retryFailedNow` (a change of what is desired) skips its retry delay. */
  schedule(kindName: string, key: string, opts: { retryFailedNow?: boolean } = {}): void {
    const entry = this.entry(kindName, key);
    if (!opts.retryFailedNow && entry.retryTimer) return;
    this.clearRetry(entry);
    this.queue.scheduleUrgent(idOf(kindName, key));
  }

  /**
   * Something about `part` of an object changed in the kernel (a link event about one device).
   * If the object is being reconciled, `stillNeeded` of the newest poke per part is asked once
   * that is done — its own changes explain most such events; else at once. A failed object waits
   * for its retry: the events of its own undo must not retry it.
   */
  poke(kindName: string, key: string, part: string, stillNeeded: StillNeeded): void {
    const id = idOf(kindName, key);
    if (this.running.has(id)) {
      let pending = this.pokedWhileRunning.get(id);
      if (!pending) this.pokedWhileRunning.set(id, (pending = new Map()));
      pending.set(part, stillNeeded);
      return;
    }
    const entry = this.entries.get(id);
    if (entry?.retryTimer) return;
    if (stillNeeded()) this.queue.scheduleUrgent(id);
  }

  /**
   * Every kind reads the kernel once and every object is visited. Rounds do not overlap: asked
   * for during one, another follows it (once, however often it was asked for). Resolves true when
   * every kind could read the kernel.
   */
  fullRound(reason: string, options: FullRoundOptions = {}): Promise<boolean> {
    if (this.fullRoundRunning) {
      const again = this.fullRoundAgain;
      this.fullRoundAgain = { reason, options: { retryFailedNow: Boolean(options.retryFailedNow || again?.options.retryFailedNow) } };
      return this.fullRoundRunning.then(() => this.fullRoundRunning ?? true);
    }
    this.fullRoundRetry?.cancel();
    this.fullRoundRetry = undefined;
    const round = ++this.rounds;
    const run = this.runFullRound(round, reason, options);
    this.fullRoundRunning = run.finally(() => {
      this.fullRoundRunning = undefined;
      const again = this.fullRoundAgain;
      this.fullRoundAgain = undefined;
      if (again && !this.stopped) void this.fullRound(again.reason, again.options);
      this.resolveIdleIfIdle();
    });
    return this.fullRoundRunning;
  }

  /** Every full round numbered this or higher starts after now (the one running, if any, is lower). */
  get nextRound(): number {
    return this.rounds + 1;
  }

  statusOf(kindName: string, key: string): ObjectStatus | undefined {
    return this.entries.get(idOf(kindName, key))?.status;
  }

  /** Objects of a kind by state, for metrics. */
  countByState(kindName: string): Record<ObjectState, number> {
    const counts: Record<ObjectState, number> = { pending: 0, done: 0, failed: 0, blocked: 0 };
    for (const entry of this.entries.values()) if (entry.kind.name === kindName) counts[entry.status.state]++;
    return counts;
  }

  /** Resolves when nothing is queued, running or in a full round (retry timers may still be set). */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private isIdle(): boolean {
    return this.queue.size === 0 && !this.fullRoundRunning;
  }

  private async runFullRound(round: number, reason: string, options: FullRoundOptions): Promise<boolean> {
    const started = this.timers.now();
    const visits: Array<[string, unknown]> = [];
    try {
      for (const kind of this.kinds.values()) {
        for (const [key, hint] of await kind.observeAll()) visits.push([idOf(kind.name, key), hint]);
      }
    } catch (error) {
      const delay = backoffDelay(this.retry, ++this.fullRoundFailures, this.random);
      this.log.error({ op: 'resync', err: (error as Error).message, retryInMs: delay }, `full reconcile (${reason}) could not read the kernel; retrying in ${delay} ms`);
      if (!this.stopped) this.fullRoundRetry = this.timers.after(delay, () => void this.fullRound(`retry of ${reason}`, options));
      this.hooks.fullRoundDone?.(round, false);
      return false;
    }
    this.fullRoundFailures = 0;
    for (const [id, hint] of visits) {
      const entry = this.entryById(id);
      if (entry.retryTimer) {
        if (!options.retryFailedNow) continue;
        this.clearRetry(entry);
      }
      this.queue.schedule(id, hint);
    }
    await this.queue.idle();
    this.log.debug({ op: 'resync', reason, objects: visits.length, ms: this.timers.now() - started }, 'full reconcile finished');
    this.hooks.fullRoundDone?.(round, true);
    return true;
  }

  private async attempt(id: string, hint: unknown): Promise<void> {
    const entry = this.entryById(id);
    this.running.add(id);
    const started = process.hrtime.bigint();
    let outcome: Outcome = { result: 'failed', reason: 'not attempted' };
    let stale = 0;
    try {
      for (;;) {
        try {
          outcome = await entry.kind.reconcile(entry.key, hint);
        } catch (error) {
          // A kind reports kernel refusals as outcomes; anything thrown is a bug, kept from the other objects.
          this.log.error({ kind: entry.kind.name, key: entry.key, err: (error as Error).stack }, 'unexpected reconcile failure');
          outcome = { result: 'failed', reason: `internal error: ${(error as Error).message}` };
        }
        if (outcome.result !== 'stale') break;
        hint = undefined;
        if (++stale >= MAX_STALE_RUNS) {
          outcome = { result: 'failed', reason: 'the kernel kept changing under the reconcile' };
          break;
        }
      }
      // Our own changes' notifications are already queued on the event socket when the last
      // reply arrives; one turn of the event loop lets them in, so they are judged below
      // against the state just applied instead of each costing another reconcile.
      if (outcome.result === 'done' && outcome.changed) await new Promise<void>((resolve) => setImmediate(resolve));
    } finally {
      this.running.delete(id);
    }
    const poked = [...(this.pokedWhileRunning.get(id)?.values() ?? [])];
    this.pokedWhileRunning.delete(id);
    this.record(entry, outcome);
    this.hooks.observeAttempt?.(entry.kind.name, Number(process.hrtime.bigint() - started) / 1e9, outcome.result);
    // After a failure the events are our own undo: the retry timer, not they, brings it back.
    if (outcome.result !== 'failed' && poked.some((stillNeeded) => stillNeeded())) this.queue.schedule(id);
  }

  private record(entry: Entry, outcome: Outcome): void {
    const status = entry.status;
    switch (outcome.result) {
      case 'done':
        entry.status = { state: 'done', failures: 0 };
        if (outcome.forget) this.entries.delete(idOf(entry.kind.name, entry.key));
        return;
      case 'blocked':
        entry.status = { state: 'blocked', reason: outcome.reason, failures: 0 };
        return;
      case 'failed': {
        const failures = status.failures + 1;
        const delay = backoffDelay(this.retry, failures, this.random);
        entry.status = { state: 'failed', reason: outcome.reason, failures, retryAt: this.timers.now() + delay };
        if (failures === 1 || status.reason !== outcome.reason) {
          this.log.warn({ kind: entry.kind.name, key: entry.key, op: 'retry', failures, retryInMs: delay }, `${entry.kind.name} ${entry.key}: ${outcome.reason}; retrying with backoff`);
        }
        if (!this.stopped) {
          entry.retryTimer = this.timers.after(delay, () => {
            entry.retryTimer = undefined;
            if (!this.stopped) this.queue.scheduleUrgent(idOf(entry.kind.name, entry.key));
          });
        }
        return;
      }
      case 'stale':
        return;
    }
  }

  private clearRetry(entry: Entry): void {
    entry.retryTimer?.cancel();
    entry.retryTimer = undefined;
  }

  private entry(kindName: string, key: string): Entry {
    return this.entryById(idOf(kindName, key));
  }

  private entryById(id: string): Entry {
    let entry = this.entries.get(id);
    if (!entry) {
      const separator = id.indexOf(SEPARATOR);
      const kind = this.kinds.get(id.slice(0, separator));
      if (!kind) throw new Error(`no reconcile kind ${id.slice(0, separator)}`);
      entry = { kind, key: id.slice(separator + 1), status: { state: 'pending', failures: 0 } };
      this.entries.set(id, entry);
    }
    return entry;
  }

  private schedulePeriodic(): void {
    if (!this.options.fullRoundIntervalMs || this.stopped) return;
    this.periodicTimer = this.timers.after(this.options.fullRoundIntervalMs, () => {
      void this.fullRound('periodic');
      this.schedulePeriodic();
    });
  }

  private queueDrained(): void {
    this.hooks.idle?.();
    this.resolveIdleIfIdle();
  }

  private resolveIdleIfIdle(): void {
    if (!this.isIdle()) return;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

function idOf(kindName: string, key: string): string {
  return `${kindName}${SEPARATOR}${key}`;
}
