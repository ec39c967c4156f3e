import { describe, expect, it } from 'vitest';
import { KeyedWorkQueue } from '../src/reconcile/queue.js';
import { Backoff } from '../src/store/backoff.js';

describe('Backoff', () => {
  it('doubles from the initial delay up to the cap, and starts over after reset', () => {
    const backoff = new Backoff(200, 3000);
    expect([1, 2, 3, 4, 5, 6].map(() => backoff.next())).toEqual([200, 400, 800, 1600, 3000, 3000]);
    backoff.reset();
    expect(backoff.next()).toBe(200);
  });
});

describe('KeyedWorkQueue', () => {
  const deferred = () => {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    return { promise, resolve };
  };

  it('serialises one key, coalesces repeats, and bounds concurrency across keys', async () => {
    const gates = new Map<string, ReturnType<typeof deferred>>();
    const log: string[] = [];
    let active = 0;
    let maxActive = 0;
    const queue = new KeyedWorkQueue<string>(2, async (key, hint) => {
      active++;
      maxActive = Math.max(maxActive, active);
      log.push(`start ${key}${hint ? `:${hint}` : ''}`);
      const gate = deferred();
      gates.set(key, gate);
      await gate.promise;
      active--;
    });
    queue.schedule('a', 'fresh');
    queue.schedule('b');
    queue.schedule('c');
    queue.schedule('a', 'stale');
    queue.schedule('a');
    await Promise.resolve();
    expect(log).toEqual(['start a:fresh', 'start b']);
    gates.get('a')!.resolve();
    await new Promise((r) => setTimeout(r, 0));
    // 'a' ran again once (coalesced), without the stale hint; c waits for a slot.
    gates.get('b')!.resolve();
    await new Promise((r) => setTimeout(r, 0));
    for (const gate of gates.values()) gate.resolve();
    await new Promise((r) => setTimeout(r, 0));
    for (const gate of gates.values()) gate.resolve();
    await queue.idle();
    expect(log.filter((l) => l.startsWith('start a'))).toEqual(['start a:fresh', 'start a']);
    expect(log).toContain('start c');
    expect(maxActive).toBe(2);
  });

  it('a failing job does not stop the queue', async () => {
    const done: string[] = [];
    const queue = new KeyedWorkQueue<never>(1, async (key) => {
      if (key === 'bad') throw new Error('boom');
      done.push(key);
    });
    queue.schedule('bad');
    queue.schedule('good');
    await queue.idle();
    expect(done).toEqual(['good']);
  });

  it('urgent keys go before the bulk of a resync; a queued key made urgent moves up and loses its hint', async () => {
    const started: string[] = [];
    const queue = new KeyedWorkQueue<string>(1, async (key, hint) => void started.push(`${key}${hint ? `:${hint}` : ''}`));
    for (const key of ['r1', 'r2', 'r3', 'r4']) queue.schedule(key, 'dump');
    queue.scheduleUrgent('etcd-change');
    queue.scheduleUrgent('r3');
    await queue.idle();
    expect(started).toEqual(['r1:dump', 'etcd-change', 'r3', 'r2:dump', 'r4:dump']);
  });
});
