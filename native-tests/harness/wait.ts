import { inspect } from 'node:util';

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Polls `fn` until it yields a value other than undefined, null or false, and
 * returns that value. A throwing `fn` counts as "not yet" (the kernel or an
 * HTTP endpoint is often briefly not there); its error is reported as the last
 * value if time runs out, which is usually the most useful hint in a failure.
 */
export async function waitFor<T>(
  fn: () => Promise<T | undefined | false | null>,
  what: string,
  timeoutMs = 10_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value !== undefined && value !== null && value !== false) return value;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() >= deadline) {
      const shown = last instanceof Error ? last.message : inspect(last, { depth: 4, breakLength: Infinity });
      const error = new Error(`timed out waiting for ${what} after ${timeoutMs} ms; last value: ${shown}`);
      (error as Error & { lastValue?: unknown }).lastValue = last;
      throw error;
    }
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
}
