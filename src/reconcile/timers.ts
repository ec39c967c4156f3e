/** Time as the reconcile loop sees it: injectable, so tests advance it instead of sleeping. */

export interface Timer {
  cancel(): void;
}

export interface Timers {
  now(): number;
  /** Runs `fn` once after `ms`; the timer does not keep the process alive. */
  after(ms: number, fn: () => void): Timer;
}

/** Node's setTimeout cannot wait longer than 2^31-1 ms: a longer delay fires after 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemTimers: Timers = {
  now: () => Date.now(),
  after(ms, fn) {
    const timer = setTimeout(fn, Math.min(Math.max(0, ms), MAX_TIMER_MS));
    timer.unref();
    return { cancel: () => clearTimeout(timer) };
  },
};

/**
 * Capped exponential backoff with jitter: attempt n (1, 2, …) waits about initial × 2^(n-1), at
 * most `max`, spread by ±jitter so that objects that failed together do not retry together.
 */
export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** 0…1: the delay is multiplied by a random factor in [1 - jitter, 1 + jitter], then capped. */
  jitter: number;
}

export const RETRY_BACKOFF: BackoffPolicy = { initialMs: 1000, maxMs: 60_000, jitter: 0.2 };

export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const base = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30));
  const spread = 1 + policy.jitter * (2 * random() - 1);
  return Math.round(Math.min(policy.maxMs, base * spread));
}
