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
 * The worker only moves bytes: RequestChannel (rtnl.ts) still numbers,
 * matches, times out and replaces sockets on the agent's thread. Datagrams
 * cross in batches, one message per event-loop turn each way, packed into
 * one transferred buffer (a Buffer from Node's pool would clone its whole
 * 8 KiB slab).
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';

/** What the agent's thread sends: datagrams `firstId`, `firstId + 1`, … packed in `data`. */
export interface ToWorker {
  send?: PackedDatagrams & { firstId: number };
  receiveBufferBytes?: number;
  /** Nothing waits for an answer: close the socket until the next send. */
  idle?: true;
  /** Close the socket (then set the flag to 1) and end the thread. */
  close?: Int32Array;
}

/** What the worker answers: datagrams received, sends completed up to `sentUpTo` (those in `sendErrors` failed). */
export interface FromWorker {
  received?: PackedDatagrams;
  sentUpTo?: number;
  sendErrors?: Array<{ id: number; code?: string; message: string }>;
  socketError?: { code?: string; message: string };
}

/** Datagrams packed into one buffer that can be transferred, and their lengths. */
export interface PackedDatagrams {
  data: Uint8Array;
  lengths: number[];
}

// Both sides pack and unpack alike: the worker gets these two functions' own source (toString()).
// They may use only their parameters and globals.
function packDatagrams(datagrams: Uint8Array[]): PackedDatagrams {
  let bytes = 0;
  for (const datagram of datagrams) bytes += datagram.length;
  const data = new Uint8Array(bytes);
  const lengths: number[] = [];
  let offset = 0;
  for (const datagram of datagrams) {
    data.set(datagram, offset);
    offset += datagram.length;
    lengths.push(datagram.length);
  }
  return { data, lengths };
}

/** Stops early when visit() returns false. */
function forEachDatagram(packed: PackedDatagrams, visit: (datagram: Buffer, index: number) => boolean | void): void {
  let offset = 0;
  for (let i = 0; i < packed.lengths.length; i++) {
    const length = packed.lengths[i]!;
    if (visit(Buffer.from(packed.data.buffer, packed.data.byteOffset + offset, length), i) === false) return;
    offset += length;
  }
}

// Plain CommonJS run with `eval`, so that the worker needs no file of its own beside the bundle.
// Every handler catches: an exception escaping a callback of the native binding aborts the process.
// A thread that ends (process.exit(), terminate()) with a netlink socket still open aborts the
// whole process about one time in two (the binding throws a Napi::Error while its environment is
// torn down). So the socket is open only while the agent waits for answers, and a process that
// exits while it is open first has the worker close it (closeAllOnExit).
const WORKER_SOURCE = `
'use strict';
const { parentPort, workerData } = require('node:worker_threads');
const { RawNetlinkSocket } = require(workerData.rawModule);
const NETLINK_ROUTE = 0;
const packDatagrams = (${packDatagrams.toString()});
const forEachDatagram = (${forEachDatagram.toString()});
let socket;
let receiveBufferBytes = 0;
let received = [];
let sentUpTo;
let sendErrors = [];
let flushScheduled = false;

function flush() {
  flushScheduled = false;
  const message = { sentUpTo, sendErrors };
  const transfer = [];
  if (received.length > 0) {
    message.received = packDatagrams(received);
    transfer.push(message.received.data.buffer);
  }
  received = [];
  sendErrors = [];
  parentPort.postMessage(message, transfer);
}
function scheduleFlush() {
  if (flushScheduled) return;
  flushScheduled = true;
  setImmediate(flush);
}
function describe(error) {
  return { code: error && error.code, message: String(error && error.message) };
}
function reportSocketError(error) {
  try {
    parentPort.postMessage({ socketError: describe(error) });
  } catch {}
}

function openSocket() {
  const opened = new RawNetlinkSocket(NETLINK_ROUTE);
  if (receiveBufferBytes) {
    try {
      opened.setRecvBufferSize(receiveBufferBytes);
    } catch {}
  }
  opened.on('message', (datagram) => {
    received.push(datagram);
    scheduleFlush();
  });
  opened.on('error', (error) => {
    // The binding has closed the socket.
    if (socket === opened) socket = undefined;
    reportSocketError(error);
  });
  return opened;
}
function closeSocket() {
  const open = socket;
  socket = undefined;
  try {
    if (open) open.close();
  } catch {}
}
function send(id, datagram) {
  try {
    if (!socket) socket = openSocket();
    socket.send(datagram, {}, (error) => {
      if (error) sendErrors.push({ id, ...describe(error) });
      sentUpTo = id;
      scheduleFlush();
    });
  } catch (error) {
    sendErrors.push({ id, ...describe(error) });
    sentUpTo = id;
    scheduleFlush();
  }
}

parentPort.on('message', (message) => {
  try {
    if (message.close) {
      closeSocket();
      Atomics.store(message.close, 0, 1);
      Atomics.notify(message.close, 0);
      parentPort.close();
      return;
    }
    if (message.idle) closeSocket();
    if (message.receiveBufferBytes) receiveBufferBytes = message.receiveBufferBytes;
    if (message.send) forEachDatagram(message.send, (datagram, i) => send(message.send.firstId + i, datagram));
  } catch (error) {
    reportSocketError(error);
  }
});
`;

/** How long an exiting process waits for a worker to close its socket: normally microseconds. */
const EXIT_CLOSE_WAIT_MS = 1000;
const liveSockets = new Set<WorkerRequestSocket>();
let exitHookInstalled = false;

/** process 'exit' handlers must be synchronous: the main thread blocks until each worker has closed its socket. */
function closeAllOnExit(): void {
  for (const socket of liveSockets) socket.closeBeforeExit();
}

type SendCallback = (error?: Error & { code?: string }) => void;

function sendError(detail: { code?: string; message: string }): Error & { code?: string } {
  return Object.assign(new Error(detail.message), { code: detail.code });
}

/** What WorkerRequestSocket uses of its worker (a fake one in unit tests). */
export type RequestWorker = Pick<Worker, 'postMessage' | 'on' | 'ref' | 'unref'>;

/** Starts the thread that owns one raw rtnetlink socket. */
export function startRequestWorker(): Worker {
  return new Worker(WORKER_SOURCE, { eval: true, workerData: { rawModule: createRequire(import.meta.url).resolve('netlink/dist/raw.js') } });
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
