/**
 * The request socket on a thread of its own.
 *
 * The kernel handles an rtnetlink request inside the sender's sendmsg(): a
 * device creation at 1,000 networks holds the calling thread for ~0.3-1 ms,
 * and the netlink binding sends on the JavaScript thread. On the agent's
 * thread that kernel time and the agent's own JavaScript (plans, request
 * encoding, status, logs: ~0.5 ms per network) add up; here the worker sends
 * and receives while the agent's thread goes on with the next networks, so
 * they overlap (bench/RESULTS.md, "requests on a worker thread").
 *
 * The worker (request-worker-thread.ts) only moves bytes: RequestChannel
 * (rtnl.ts) still numbers, matches, times out and replaces sockets on the
 * agent's thread. Datagrams cross in batches (request-thread-protocol.ts).
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { forEachDatagram, packDatagrams, REQUEST_THREAD, type ErrorDetail, type FromWorker, type ToWorker } from './request-thread-protocol.js';

export type { FromWorker, ToWorker } from './request-thread-protocol.js';

/**
 * How long an exiting process waits for a worker to close its socket: 2-17 ms here, but once more
 * than 1 s with three busy processes on the 2 CPUs (exit-while-busy probe, 1 run in ~250).
 */
const EXIT_CLOSE_WAIT_MS = 3000;
const liveSockets = new Set<WorkerRequestSocket>();
let exitHookInstalled = false;

/** process 'exit' handlers must be synchronous: the main thread blocks until each worker has closed its socket. */
function closeAllOnExit(): void {
  for (const socket of liveSockets) socket.closeBeforeExit();
}

type SendCallback = (error?: Error & { code?: string }) => void;

function sendError(detail: ErrorDetail): Error & { code?: string } {
  return Object.assign(new Error(detail.message), { code: detail.code });
}

/** What WorkerRequestSocket uses of its worker (a fake one in unit tests). */
export type RequestWorker = Pick<Worker, 'postMessage' | 'on' | 'ref' | 'unref'>;

/**
 * The thread's module beside this one: request-worker-thread.js beside the bundle (dist/cli/) or
 * the compiled module (build/kernel/), request-worker-thread.ts beside the source under tsx.
 */
const FROM_SOURCE = import.meta.url.endsWith('.ts');
const THREAD_MODULE = new URL(FROM_SOURCE ? './request-worker-thread.ts' : './request-worker-thread.js', import.meta.url);
let threadSourceBundle: string | undefined;

/**
 * Under tsx (tests, probes, benches) a worker does not inherit the loader hooks that `--import tsx`
 * registered on the main thread, and a worker that registers them itself and is terminated while
 * doing so can leave the next worker's imports hanging. So the thread's TypeScript module is bundled
 * here, as scripts/bundle.mjs does for dist/, and run as the worker's code.
 */
function threadFromSource(): string {
  if (threadSourceBundle) return threadSourceBundle;
  // Through createRequire, which the bundler does not follow: esbuild is needed only under tsx.
  const esbuild = createRequire(import.meta.url)('esbuild') as typeof import('esbuild');
  const { outputFiles } = esbuild.buildSync({
    entryPoints: [fileURLToPath(THREAD_MODULE)],
    bundle: true,
    write: false,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    external: ['netlink', 'netlink/*'],
    define: { 'import.meta.url': JSON.stringify(THREAD_MODULE.href) },
    logLevel: 'warning',
  });
  threadSourceBundle = outputFiles[0]!.text;
  return threadSourceBundle;
}

/** Starts the thread that owns one raw rtnetlink socket. */
/** `readBytes`: read datagrams into buffers this large instead of peeking (for dumps: request-worker-thread.ts says why). */
export function startRequestWorker(opts: { readBytes?: number } = {}): Worker {
  const workerData = { role: REQUEST_THREAD, ...opts };
  return FROM_SOURCE ? new Worker(threadFromSource(), { eval: true, workerData }) : new Worker(THREAD_MODULE, { workerData });
}

/** A raw rtnetlink socket whose sendmsg()/recvmsg() run on a worker thread; RequestChannel's RequestSocket. */
export class WorkerRequestSocket extends EventEmitter {
  private outbox: Buffer[] = [];
  private flushScheduled = false;
  private nextId = 1;
  private readonly callbacks = new Map<number, SendCallback>();
  private closed = false;
  /** Set to 1 by the worker once its socket is closed. */
  private readonly socketClosed = new Int32Array(new SharedArrayBuffer(4));
  private readonly ended: Promise<void>;

  constructor(private readonly worker: RequestWorker = startRequestWorker()) {
    super();
    this.worker.on('message', (message: FromWorker) => this.fromWorker(message));
    this.worker.on('error', (error) => this.fail(error));
    this.ended = new Promise<void>((resolve) =>
      this.worker.on('exit', (code) => {
        liveSockets.delete(this);
        resolve();
        this.fail(new Error(`netlink worker thread exited (code ${code})`));
      }),
    );
    liveSockets.add(this);
    if (!exitHookInstalled) {
      exitHookInstalled = true;
      process.on('exit', closeAllOnExit);
    }
  }

  send(message: Buffer | Buffer[], _options: unknown, callback?: SendCallback): void {
    if (this.closed) throw new Error('Netlink socket is closed');
    const datagram = Buffer.isBuffer(message) ? message : Buffer.concat(message);
    const id = this.nextId + this.outbox.length;
    if (callback) this.callbacks.set(id, callback);
    this.outbox.push(datagram);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // Everything the agent sends in this turn of the event loop crosses as one message.
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    if (this.closed || this.outbox.length === 0) return;
    const packed = packDatagrams(this.outbox);
    const firstId = this.nextId;
    this.nextId += this.outbox.length;
    this.outbox = [];
    this.post({ send: { firstId, ...packed } }, [packed.data.buffer as ArrayBuffer]);
  }

  private fromWorker(message: FromWorker): void {
    if (this.closed) return;
    if (message.socketError) {
      this.fail(sendError(message.socketError));
      return;
    }
    for (const failed of message.sendErrors ?? []) {
      const callback = this.callbacks.get(failed.id);
      this.callbacks.delete(failed.id);
      callback?.(sendError(failed));
    }
    if (message.sentUpTo !== undefined) {
      for (const [id, callback] of this.callbacks) {
        if (id > message.sentUpTo) break;
        this.callbacks.delete(id);
        callback();
      }
    }
    if (!message.received) return;
    // A datagram's handler may close this socket: the rest is for nobody.
    forEachDatagram(message.received, (datagram) => {
      if (this.closed) return false;
      this.emit('message', datagram);
    });
  }

  /** The worker died or its socket failed: like the binding's socket, this one is closed from now on. */
  private fail(error: Error): void {
    if (this.closed) return;
    void this.close();
    this.emit('error', error);
  }

  private post(message: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker.postMessage(message, transfer);
  }

  /** RequestChannel refers to the socket while requests wait… */
  ref(): void {
    this.worker.ref();
  }

  /** …and lets go of it when none does: then the worker closes its netlink socket too. */
  unref(): void {
    this.worker.unref();
    if (!this.closed) this.post({ idle: true });
  }

  setRecvBufferSize(bytes: number): void {
    this.post({ receiveBufferBytes: bytes });
  }

  /** Resolves when the thread has ended, its socket closed: only then may the process exit safely. */
  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.callbacks.clear();
      this.outbox = [];
      // The worker closes its socket and ends; the process waits for that, since a thread ended
      // with its netlink socket open can abort it.
      this.post({ close: this.socketClosed });
      this.worker.ref();
    }
    return this.ended;
  }

  /** For a process that is exiting now: blocks until the worker has closed its socket. */
  closeBeforeExit(): void {
    void this.close();
    Atomics.wait(this.socketClosed, 0, 0, EXIT_CLOSE_WAIT_MS);
  }
}
