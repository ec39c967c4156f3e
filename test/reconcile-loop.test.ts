/** The reconcile loop with a toy kind of object: rounds, retries with backoff, stale reads, pokes. */
import { describe, expect, it } from 'vitest';
import { ReconcileLoop, type ObjectKind, type Outcome } from '../src/reconcile/loop.js';
import { backoffDelay, RETRY_BACKOFF } from '../src/reconcile/timers.js';
import { FakeTimers } from './support/fake-timers.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };

/** Objects are names in a set; the "kernel" is another set; `broken` names refuse to be created. */
class ToyKind implements ObjectKind<boolean> {
  readonly name = 'toy';
  readonly desired = new Set<string>();
  readonly kernel = new Set<string>();
  readonly broken = new Set<string>();
  readonly attempts: string[] = [];
  failObserve = 0;
  staleOnce = new Set<string>();

  async observeAll(): Promise<Map<string, boolean>> {
    if (this.failObserve > 0) {
      this.failObserve--;
      throw new Error('dump failed');
    }
    const keys = new Set([...this.desired, ...this.kernel]);
    return new Map([...keys].map((key) => [key, this.kernel.has(key)]));
  }

  async reconcile(key: string): Promise<Outcome> {
    this.attempts.push(key);
    if (this.staleOnce.delete(key)) return { result: 'stale' };
    const want = this.desired.has(key);
    if (want === this.kernel.has(key)) return { result: 'done', changed: false };
    if (want && this.broken.has(key)) return { result: 'failed', reason: `${key} is broken` };
    if (want) this.kernel.add(key);
    else this.kernel.delete(key);
    return { result: 'done', changed: true, forget: !want };
  }
}

function setup(opts: { intervalMs?: number } = {}) {
  const timers = new FakeTimers();
  const rounds: Array<[number, boolean]> = [];
  const loop = new ReconcileLoop(quiet, {
    concurrency: 4,
    fullRoundIntervalMs: opts.intervalMs ?? 0,
    timers,
    random: () => 0.5, // no jitter: delays are exact
    hooks: { fullRoundDone: (round, ok) => rounds.push([round, ok]) },
  });
  const kind = new ToyKind();
  loop.register(kind);
  loop.start();
  const advance = (ms: number) => timers.advance(ms, () => loop.idle());
  return { timers, loop, kind, rounds, advance };
}

describe('backoffDelay', () => {
  it('doubles from 1 s to a 60 s cap, spread by the jitter', () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8, 30].map((n) => backoffDelay(RETRY_BACKOFF, n, () => 0.5))).toEqual([
      1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000,
    ]);
    expect(backoffDelay(RETRY_BACKOFF, 1, () => 0)).toBe(800);
    expect(backoffDelay(RETRY_BACKOFF, 1, () => 1)).toBe(1200);
    expect(backoffDelay(RETRY_BACKOFF, 10, () => 1)).toBe(60000);
  });
});

describe('ReconcileLoop', () => {
  it('a full round creates what is desired and prunes what is not', async () => {
    const { loop, kind, rounds } = setup();
    kind.desired.add('a').add('b');
    kind.kernel.add('stale');
    expect(await loop.fullRound('test')).toBe(true);
    expect([...kind.kernel].sort()).toEqual(['a', 'b']);
    expect(loop.statusOf('toy', 'a')).toEqual({ state: 'done', failures: 0 });
    expect(loop.statusOf('toy', 'stale')).toBeUndefined();
    expect(rounds).toEqual([[1, true]]);
  });

  it('retries a failed object with capped exponential backoff, and it converges once the cause is gone, with no other trigger', async () => {
    const { loop, kind, advance } = setup();
    kind.desired.add('x');
    kind.broken.add('x');
    await loop.fullRound('test');
    expect(loop.statusOf('toy', 'x')).toMatchObject({ state: 'failed', reason: 'x is broken', failures: 1, retryAt: 1000 });
    // Ten minutes of failing: retries after 1, 2, 4, 8, 16 and 32 s (at 63 s), then one a minute.
    await advance(600_000);
    const attempts = kind.attempts.length;
    expect(attempts).toBe(1 + 6 + 8);
    expect(loop.statusOf('toy', 'x')).toMatchObject({ state: 'failed', failures: attempts });
    kind.broken.delete('x');
    await advance(60_000);
    expect(kind.kernel.has('x')).toBe(true);
    expect(loop.statusOf('toy', 'x')).toEqual({ state: 'done', failures: 0 });
  });

  it('a periodic round leaves a failed object to its retry time; a round for new desired state tries it at once', async () => {
    const { loop, kind, advance } = setup({ intervalMs: 500 });
    kind.desired.add('x');
    kind.broken.add('x');
    await loop.fullRound('test');
    await advance(3000); // retries at 1 s and 3 s; five periodic rounds in between add none
    expect(kind.attempts).toEqual(['x', 'x', 'x']);
    await loop.fullRound('etcd list', { retryFailedNow: true });
    expect(kind.attempts).toHaveLength(4);
  });

  it('schedule() with retryFailedNow bypasses the retry delay; without it, waits', async () => {
    const { loop, kind } = setup();
    kind.desired.add('x');
    kind.broken.add('x');
    await loop.fullRound('test');
    loop.schedule('toy', 'x');
    await loop.idle();
    expect(kind.attempts).toHaveLength(1);
    kind.broken.delete('x');
    loop.schedule('toy', 'x', { retryFailedNow: true });
    await loop.idle();
    expect(kind.kernel.has('x')).toBe(true);
  });

  it('a full round whose read of the kernel fails is retried with backoff until it succeeds', async () => {
    const { loop, kind, rounds, advance } = setup();
    kind.desired.add('a');
    kind.failObserve = 2;
    expect(await loop.fullRound('first')).toBe(false);
    expect(kind.kernel.size).toBe(0);
    await advance(1000);
    await advance(2000);
    expect(rounds).toEqual([[1, false], [2, false], [3, true]]);
    expect(kind.kernel.has('a')).toBe(true);
  });

  it('a stale read runs the object again at once without a hint; always stale counts as a failure', async () => {
    const { loop, kind } = setup();
    kind.desired.add('a');
    kind.staleOnce.add('a');
    loop.schedule('toy', 'a');
    await loop.idle();
    expect(kind.attempts).toEqual(['a', 'a']);
    expect(kind.kernel.has('a')).toBe(true);

    const always: ObjectKind<undefined> = { name: 'stale', observeAll: async () => new Map(), reconcile: async () => ({ result: 'stale' }) };
    loop.register(always);
    loop.schedule('stale', 'z');
    await loop.idle();
    expect(loop.statusOf('stale', 'z')).toMatchObject({ state: 'failed', failures: 1 });
  });

  it('pokes during a reconcile are judged after it, newest per part; a failed object ignores pokes until its retry', async () => {
    const { loop, kind } = setup();
    kind.desired.add('a');
    const judged: string[] = [];
    const reconcile = kind.reconcile.bind(kind);
    kind.reconcile = async (key) => {
      loop.poke('toy', key, 'dev1', () => (judged.push('old dev1'), true));
      loop.poke('toy', key, 'dev1', () => (judged.push('new dev1'), false));
      return reconcile(key);
    };
    loop.schedule('toy', 'a');
    await loop.idle();
    expect(judged).toEqual(['new dev1']);
    expect(kind.attempts).toEqual(['a']);

    kind.reconcile = reconcile;
    kind.desired.add('b');
    kind.broken.add('b');
    loop.schedule('toy', 'b');
    await loop.idle();
    loop.poke('toy', 'b', 'dev', () => true);
    await loop.idle();
    expect(kind.attempts.filter((k) => k === 'b')).toHaveLength(1);
    // A poke of a converged object that is still needed reconciles it.
    kind.kernel.delete('a');
    loop.poke('toy', 'a', 'dev', () => true);
    await loop.idle();
    expect(kind.kernel.has('a')).toBe(true);
  });

  it('an object whose reconcile throws is failed and retried, the others unaffected', async () => {
    const { loop, kind } = setup();
    kind.desired.add('a').add('boom');
    const reconcile = kind.reconcile.bind(kind);
    kind.reconcile = async (key) => {
      if (key === 'boom') throw new Error('bug');
      return reconcile(key);
    };
    await loop.fullRound('test');
    expect(kind.kernel.has('a')).toBe(true);
    expect(loop.statusOf('toy', 'boom')).toMatchObject({ state: 'failed', reason: 'internal error: bug' });
    expect(loop.countByState('toy')).toEqual({ pending: 0, done: 1, failed: 1, blocked: 0 });
  });

  it('rounds asked for during a round run once, after it; stop() cancels every timer', async () => {
    const { loop, kind, rounds, timers } = setup({ intervalMs: 1000 });
    kind.desired.add('x');
    kind.broken.add('x');
    const first = loop.fullRound('one');
    const second = loop.fullRound('two');
    const third = loop.fullRound('three');
    await Promise.all([first, second, third]);
    expect(rounds.map(([round]) => round)).toEqual([1, 2]);
    expect(timers.scheduled).toBe(2); // the periodic round and x's retry
    loop.stop();
    expect(timers.scheduled).toBe(0);
  });
});
