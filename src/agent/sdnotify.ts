/**
 * systemd readiness and watchdog notifications (sd_notify(3)) without libsystemd
 * and without spawning `systemd-notify` (which would send its own PID and force
 * NotifyAccess=all).
 *
 * Node core cannot open a unix datagram socket, so this uses the napi-rs module
 * `node-unix-socket` (prebuilt N-API binaries, no compiler). It is loaded lazily,
 * only when NOTIFY_SOCKET is set, so that a missing or broken native binary never
 * stops the agent from running outside systemd.
 *
 * Facts about node-unix-socket 0.2.7 that shape this file (checked with strace):
 * - sendTo() calls sendmsg(2) synchronously; the callback runs synchronously for
 *   an immediate result (success or error) and later only if the datagram had to
 *   be queued. So a message sent right before process.exit() is not lost.
 * - An open DgramSocket keeps the event loop alive and cannot be unref'd, so a
 *   socket is opened per message and closed as soon as the send completes: the
 *   notifier never holds the process open (the watchdog timer is unref'd too).
 * - It always passes sizeof(struct sockaddr_un) (110) as the address length, so
 *   an abstract-namespace NOTIFY_SOCKET ("@name") cannot be reached: the kernel
 *   would look for "\0name" padded with NULs up to 108 bytes, while systemd binds
 *   the exact length. Such a socket is reported once and the notifier is a no-op.
 */
import { createRequire } from 'node:module';
import type { DgramSocket } from 'node-unix-socket';

export interface SystemdNotifier {
  /** READY=1 (and STATUS=… when given); starts the watchdog pings if systemd asked for them. */
  ready(status?: string): void;
  /** STATUS=…: free-form text shown by `systemctl status`. */
  status(text: string): void;
  /** STOPPING=1: the agent is shutting down. */
  stopping(): void;
  /** Stops the watchdog timer; later calls send nothing. Idempotent. */
  close(): void;
}

export type NotifyLog = (msg: string, err?: unknown) => void;

/** Longest path that fits in sockaddr_un.sun_path (108 bytes) with its terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;
/** A queued (not immediately sent) datagram is given this long before its socket is closed. */
const QUEUED_SEND_TIMEOUT_MS = 1000;

const NOOP_NOTIFIER: SystemdNotifier = Object.freeze({
  ready() {},
  status() {},
  stopping() {},
  close() {},
});

function defaultLog(msg: string, err?: unknown): void {
  const detail = err === undefined ? '' : `: ${err instanceof Error ? err.message : String(err)}`;
  process.stderr.write(`vxnetd sdnotify: ${msg}${detail}\n`);
}

type DgramSocketCtor = new () => DgramSocket;

function loadDgramSocket(): DgramSocketCtor {
  const require = createRequire(import.meta.url);
  return (require('node-unix-socket') as { DgramSocket: DgramSocketCtor }).DgramSocket;
}

/** One assignment per line: a newline in free text would inject another assignment. */
function oneLine(text: string): string {
  return text.replace(/[\r\n\0]+/g, ' ');
}

/**
 * Watchdog interval in ms (half of WATCHDOG_USEC, as sd_watchdog_enabled(3)
 * recommends), or undefined when systemd did not ask this process for pings.
 */
export function watchdogIntervalMs(env: NodeJS.ProcessEnv, pid: number, log: NotifyLog): number | undefined {
  const usecText = env.WATCHDOG_USEC;
  if (usecText === undefined || usecText === '') return undefined;
  const pidText = env.WATCHDOG_PID;
  if (pidText !== undefined && pidText !== '') {
    if (!/^\d+$/.test(pidText)) {
      log(`ignoring WATCHDOG_USEC: WATCHDOG_PID ${JSON.stringify(pidText)} is not a process id`);
      return undefined;
    }
    // The watchdog belongs to another process (e.g. a wrapper that exec'd us without updating it).
    if (Number(pidText) !== pid) return undefined;
  }
  if (!/^\d+$/.test(usecText) || Number(usecText) <= 0 || !Number.isSafeInteger(Number(usecText))) {
    log(`ignoring WATCHDOG_USEC ${JSON.stringify(usecText)}: not a positive number of microseconds`);
    return undefined;
  }
  // setInterval clamps anything above 2^31-1 ms to 1 ms: never ping slower than that.
  return Math.min(Math.max(1, Math.floor(Number(usecText) / 2000)), 2 ** 31 - 1);
}

export function createSystemdNotifier(env: NodeJS.ProcessEnv = process.env, log: NotifyLog = defaultLog): SystemdNotifier {
  const socketEnv = env.NOTIFY_SOCKET;
  if (socketEnv === undefined || socketEnv === '') return NOOP_NOTIFIER;

  if (socketEnv.startsWith('@')) {
    log(
      `NOTIFY_SOCKET ${JSON.stringify(socketEnv)} is in the abstract namespace, which node-unix-socket cannot ` +
        'address (it pads the address to sizeof(sockaddr_un)); readiness and watchdog are not reported. ' +
        'Use a filesystem NOTIFY_SOCKET (systemd uses /run/systemd/notify for system services).',
    );
    return NOOP_NOTIFIER;
  }
  if (!socketEnv.startsWith('/')) {
    log(`NOTIFY_SOCKET ${JSON.stringify(socketEnv)} is neither an absolute path nor @abstract; ignoring it`);
    return NOOP_NOTIFIER;
  }
  if (Buffer.byteLength(socketEnv) > MAX_SOCKET_PATH_BYTES) {
    log(`NOTIFY_SOCKET path is longer than ${MAX_SOCKET_PATH_BYTES} bytes; ignoring it`);
    return NOOP_NOTIFIER;
  }

  let Dgram: DgramSocketCtor;
  try {
    Dgram = loadDgramSocket();
  } catch (err) {
    log('cannot load node-unix-socket; readiness and watchdog are not reported to systemd', err);
    return NOOP_NOTIFIER;
  }

  const path = socketEnv;
  const interval = watchdogIntervalMs(env, process.pid, log);
  let closed = false;
  let watchdog: NodeJS.Timeout | undefined;
  // Repeated identical failures (a watchdog ping every few seconds) are logged once.
  let lastFailure: string | undefined;

  const reportResult = (state: string, err?: unknown): void => {
    if (err === undefined || err === null) {
      if (lastFailure !== undefined) log(`notifications to ${path} work again (${state})`);
      lastFailure = undefined;
      return;
    }
    const key = err instanceof Error ? err.message : String(err);
    if (key === lastFailure) return;
    lastFailure = key;
    log(`cannot send ${state} to NOTIFY_SOCKET ${path}`, err);
  };

  const send = (state: string): void => {
    if (closed) return;
    const label = state.split('\n', 1)[0]!;
    const message = Buffer.from(state, 'utf8');
    let socket: DgramSocket;
    try {
      socket = new Dgram();
    } catch (err) {
      reportResult(label, err);
      return;
    }
    let finished = false;
    let sendReturned = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (timer) clearTimeout(timer);
      try {
        socket.close();
      } catch {
        // already closed by the library after an error
      }
    };
    // The library closes the socket and emits 'error' on a poll failure; an
    // unhandled 'error' event would throw.
    socket.on('error', (err: unknown) => reportResult(label, err));
    try {
      socket.sendTo(message, 0, message.length, path, (err) => {
        finished = true;
        reportResult(label, err);
        // Never close the socket from inside the native sendTo call.
        if (sendReturned) finish();
      });
    } catch (err) {
      finished = true;
      reportResult(label, err);
    }
    sendReturned = true;
    if (finished) {
      finish();
    } else {
      // Queued because the receiver is not reading: give it a moment, then drop it.
      timer = setTimeout(() => {
        reportResult(label, new Error(`send still pending after ${QUEUED_SEND_TIMEOUT_MS} ms (receiver not reading)`));
        finish();
      }, QUEUED_SEND_TIMEOUT_MS);
      timer.unref();
    }
  };

  return {
    ready(status?: string): void {
      if (closed) return;
      send(status === undefined ? 'READY=1' : `READY=1\nSTATUS=${oneLine(status)}`);
      if (interval !== undefined && watchdog === undefined) {
        watchdog = setInterval(() => send('WATCHDOG=1'), interval);
        // The watchdog proves the event loop runs; it must not keep it running.
        watchdog.unref();
      }
    },
    status(text: string): void {
      send(`STATUS=${oneLine(text)}`);
    },
    stopping(): void {
      send('STOPPING=1');
    },
    close(): void {
      closed = true;
      if (watchdog !== undefined) clearInterval(watchdog);
      watchdog = undefined;
    },
  };
}
