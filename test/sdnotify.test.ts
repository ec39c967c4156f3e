import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DgramSocket } from 'node-unix-socket';
import { createSystemdNotifier, watchdogIntervalMs, type SystemdNotifier } from '../src/agent/sdnotify.js';

/** A stand-in for systemd's notify socket: a real AF_UNIX SOCK_DGRAM socket in a temp dir. */
class Receiver {
  readonly dir = mkdtempSync(join(tmpdir(), 'vxnetd-sdnotify-'));
  readonly path = join(this.dir, 'notify');
  readonly messages: string[] = [];
  private readonly socket = new DgramSocket();

  constructor() {
    this.socket.on('data', (buf: Buffer) => this.messages.push(buf.toString('utf8')));
    this.socket.bind(this.path);
  }

  async waitFor(predicate: (messages: string[]) => boolean, timeoutMs = 2000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate(this.messages)) {
      if (Date.now() > deadline) throw new Error(`timed out; received ${JSON.stringify(this.messages)}`);
      await sleep(5);
    }
  }

  close(): void {
    this.socket.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Logged {
  msg: string;
  err: unknown;
}

const cleanups: Array<() => void> = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

function setup(extraEnv: NodeJS.ProcessEnv = {}) {
  const receiver = new Receiver();
  const logs: Logged[] = [];
  const notifier = createSystemdNotifier({ NOTIFY_SOCKET: receiver.path, ...extraEnv }, (msg, err) => logs.push({ msg, err }));
  cleanups.push(() => receiver.close(), () => notifier.close());
  return { receiver, notifier, logs };
}

function activeTimeouts(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
}

describe('createSystemdNotifier', () => {
  it('is a no-op without NOTIFY_SOCKET, even with WATCHDOG_USEC set', async () => {
    const logs: Logged[] = [];
    const notifier: SystemdNotifier = createSystemdNotifier({ WATCHDOG_USEC: '20000' }, (msg, err) => logs.push({ msg, err }));
    const before = activeTimeouts();
    expect(() => {
      notifier.ready('up');
      notifier.status('x');
      notifier.stopping();
      notifier.close();
      notifier.close();
    }).not.toThrow();
    expect(activeTimeouts()).toBe(before);
    expect(logs).toEqual([]);
    // An empty NOTIFY_SOCKET is the same as an unset one.
    expect(() => createSystemdNotifier({ NOTIFY_SOCKET: '' }, (msg) => logs.push({ msg, err: undefined })).ready()).not.toThrow();
    expect(logs).toEqual([]);
  });

  it('sends READY=1, with STATUS when given, as exact datagrams', async () => {
    const { receiver, notifier, logs } = setup();
    notifier.ready();
    notifier.ready('converged 12 networks');
    await receiver.waitFor((m) => m.length >= 2);
    expect(receiver.messages).toEqual(['READY=1', 'READY=1\nSTATUS=converged 12 networks']);
    expect(logs).toEqual([]);
  });

  it('sends STATUS and STOPPING, and keeps status text on one line', async () => {
    const { receiver, notifier, logs } = setup();
    notifier.status('etcd disconnected\nREADY=1');
    notifier.stopping();
    await receiver.waitFor((m) => m.length >= 2);
    // A newline in the text must not inject a second assignment.
    expect(receiver.messages).toEqual(['STATUS=etcd disconnected READY=1', 'STOPPING=1']);
    expect(logs).toEqual([]);
  });

  it('pings WATCHDOG=1 every WATCHDOG_USEC/2 after ready(), on an unref\'d timer, until close()', async () => {
    const { receiver, notifier, logs } = setup({ WATCHDOG_USEC: '40000' }); // ping every 20 ms
    await sleep(80);
    expect(receiver.messages).toEqual([]); // not before ready()
    const before = activeTimeouts();
    notifier.ready();
    // The interval does not keep the event loop alive (a ref'd timer shows up as 'Timeout').
    expect(activeTimeouts()).toBe(before);
    await receiver.waitFor((m) => m.filter((x) => x === 'WATCHDOG=1').length >= 3);
    expect(receiver.messages[0]).toBe('READY=1');
    expect(new Set(receiver.messages.slice(1))).toEqual(new Set(['WATCHDOG=1']));
    notifier.ready(); // a second ready() does not start a second timer
    notifier.close();
    await sleep(30); // datagrams sent before close() may still be on their way to the receiver
    const count = receiver.messages.length;
    await sleep(80);
    expect(receiver.messages.length).toBe(count);
    notifier.stopping(); // after close() nothing is sent
    await sleep(30);
    expect(receiver.messages.length).toBe(count);
    expect(logs).toEqual([]);
  });

  it('honours WATCHDOG_PID: pings only when it names this process', async () => {
    const other = setup({ WATCHDOG_USEC: '20000', WATCHDOG_PID: String(process.pid + 1) });
    const mine = setup({ WATCHDOG_USEC: '20000', WATCHDOG_PID: String(process.pid) });
    other.notifier.ready();
    mine.notifier.ready();
    await mine.receiver.waitFor((m) => m.includes('WATCHDOG=1'));
    await sleep(60);
    expect(other.receiver.messages).toEqual(['READY=1']);
    expect(other.logs).toEqual([]);
  });

  it('computes the watchdog interval as half of WATCHDOG_USEC and rejects garbage', () => {
    const logs: string[] = [];
    const log = (msg: string) => logs.push(msg);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000' }, 42, log)).toBe(15000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '42' }, 42, log)).toBe(15000);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30000000', WATCHDOG_PID: '43' }, 42, log)).toBeUndefined();
    expect(watchdogIntervalMs({}, 42, log)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '1' }, 42, log)).toBe(1);
    expect(logs).toEqual([]);
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '30s' }, 42, log)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '0' }, 42, log)).toBeUndefined();
    expect(watchdogIntervalMs({ WATCHDOG_USEC: '1000', WATCHDOG_PID: 'self' }, 42, log)).toBeUndefined();
    expect(logs).toHaveLength(3);
  });

  it('logs send failures instead of throwing, once per distinct failure', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'vxnetd-sdnotify-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const logs: Logged[] = [];
    const notifier = createSystemdNotifier(
      { NOTIFY_SOCKET: join(dir, 'missing'), WATCHDOG_USEC: '20000' },
      (msg, err) => logs.push({ msg, err }),
    );
    cleanups.push(() => notifier.close());
    expect(() => notifier.ready('up')).not.toThrow();
    await sleep(100); // several failing watchdog pings
    expect(() => notifier.stopping()).not.toThrow();
    expect(logs.length).toBe(1);
    expect(logs[0]!.msg).toContain('cannot send READY=1');
    expect(logs[0]!.err).toBeInstanceOf(Error);
  });

  it('reports recovery after a failure', async () => {
    const receiver = new Receiver();
    cleanups.push(() => receiver.close());
    const logs: string[] = [];
    const notifier = createSystemdNotifier({ NOTIFY_SOCKET: join(receiver.dir, 'late') }, (msg) => logs.push(msg));
    notifier.status('one');
    expect(logs).toHaveLength(1);
    // The path appears (systemd re-created its socket): the next send works and says so.
    const late = new DgramSocket();
    const got: string[] = [];
    late.on('data', (buf: Buffer) => got.push(buf.toString()));
    late.bind(join(receiver.dir, 'late'));
    cleanups.push(() => late.close());
    notifier.status('two');
    await receiver.waitFor(() => got.length === 1);
    expect(got).toEqual(['STATUS=two']);
    expect(logs).toHaveLength(2);
    expect(logs[1]).toContain('work again');
  });

  it('refuses an abstract NOTIFY_SOCKET (@name) with a clear log line, since the library cannot address it', () => {
    const logs: string[] = [];
    const notifier = createSystemdNotifier({ NOTIFY_SOCKET: '@vxnetd-test', WATCHDOG_USEC: '20000' }, (msg) => logs.push(msg));
    const before = activeTimeouts();
    expect(() => {
      notifier.ready();
      notifier.stopping();
      notifier.close();
    }).not.toThrow();
    expect(activeTimeouts()).toBe(before);
    expect(logs).toHaveLength(1);
    expect(logs[0]).toContain('abstract namespace');
  });

  it('ignores a relative or over-long NOTIFY_SOCKET with a log line', () => {
    const logs: string[] = [];
    createSystemdNotifier({ NOTIFY_SOCKET: 'run/notify' }, (msg) => logs.push(msg)).ready();
    createSystemdNotifier({ NOTIFY_SOCKET: `/tmp/${'x'.repeat(120)}` }, (msg) => logs.push(msg)).ready();
    expect(logs).toHaveLength(2);
  });
});
