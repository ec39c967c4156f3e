/**
 * The request thread: owns one raw rtnetlink socket and only moves bytes
 * (request-worker.ts says why it exists). Started by startRequestWorker() from
 * this module's own file: dist/cli/request-worker-thread.js in the bundle.
 *
 * Two traps of the netlink binding shape it:
 * - An exception escaping a callback of the native binding aborts the
 *   process: every handler catches.
 * - A thread that ends (process.exit(), terminate()) with a netlink socket
 *   still open aborts the whole process about one time in two (the binding
 *   throws a Napi::Error while its environment is torn down). So the socket
 *   is open only while the agent waits for answers, and a process that exits
 *   while it is open first has the worker close it (closeAllOnExit in
 *   request-worker.ts).
 */
import { createRequire } from 'node:module';
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import type { RawNetlinkSocket } from 'netlink';
import { packDatagrams, forEachDatagram, REQUEST_THREAD, type ErrorDetail, type FromWorker, type ToWorker } from './request-thread-protocol.js';

const NETLINK_ROUTE = 0;

/** What the thread uses of the binding's raw socket (a fake one in unit tests). */
export type ThreadSocket = Pick<RawNetlinkSocket, 'send' | 'close' | 'setRecvBufferSize'> & {
  on(event: 'message', listener: (datagram: Buffer) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
};

/** What the thread uses of its port to the agent's thread. */
export interface AgentPort {
  postMessage(message: FromWorker, transfer?: ArrayBuffer[]): void;
  on(event: 'message', listener: (message: ToWorker) => void): unknown;
  close(): void;
}

function describe(error: unknown): ErrorDetail {
  const { code, message } = (error ?? {}) as { code?: string; message?: string };
  return { code, message: String(message) };
}

export class RequestThread {
  private socket?: ThreadSocket;
  private receiveBufferBytes = 0;
  private received: Buffer[] = [];
  private sentUpTo?: number;
  private sendErrors: NonNullable<FromWorker['sendErrors']> = [];
  private flushScheduled = false;

  constructor(
    private readonly port: AgentPort,
    private readonly openRawSocket: () => ThreadSocket,
  ) {
    port.on('message', (message) => this.handle(message));
  }

  private handle(message: ToWorker): void {
    try {
      if (message.close) {
        this.closeSocket();
        Atomics.store(message.close, 0, 1);
        Atomics.notify(message.close, 0);
        this.port.close();
        return;
      }
      if (message.idle) this.closeSocket();
      if (message.receiveBufferBytes) this.receiveBufferBytes = message.receiveBufferBytes;
      const send = message.send;
      if (send) forEachDatagram(send, (datagram, i) => this.send(send.firstId + i, datagram));
    } catch (error) {
      this.reportSocketError(error);
    }
  }

  /** Everything that happened in this turn of the event loop crosses as one message. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    try {
      const message: FromWorker = { sentUpTo: this.sentUpTo, sendErrors: this.sendErrors };
      const transfer: ArrayBuffer[] = [];
      if (this.received.length > 0) {
        message.received = packDatagrams(this.received);
        transfer.push(message.received.data.buffer as ArrayBuffer);
      }
      this.received = [];
      this.sendErrors = [];
      this.port.postMessage(message, transfer);
    } catch (error) {
      this.reportSocketError(error);
    }
  }

  private reportSocketError(error: unknown): void {
    try {
      this.port.postMessage({ socketError: describe(error) });
    } catch {
      // The port is closed: nobody is left to tell.
    }
  }

  private openSocket(): ThreadSocket {
    const opened = this.openRawSocket();
    if (this.receiveBufferBytes) {
      try {
        opened.setRecvBufferSize(this.receiveBufferBytes);
      } catch {
        // Capped by net.core.rmem_max; the kernel keeps the largest size it allows.
      }
    }
    opened.on('message', (datagram) => {
      this.received.push(datagram);
      this.scheduleFlush();
    });
    opened.on('error', (error) => {
      // After a poll error the binding has closed the socket; after a failed receive (ENOBUFS) it
      // has not, and an acknowledgement may be lost: either way this socket is done.
      try {
        if (this.socket === opened) this.closeSocket();
        this.reportSocketError(error);
      } catch {
        // Never out of a binding callback.
      }
    });
    return opened;
  }

  private closeSocket(): void {
    const open = this.socket;
    this.socket = undefined;
    try {
      open?.close();
    } catch {
      // Already closed by the binding.
    }
  }

  private send(id: number, datagram: Buffer): void {
    const completed = (error?: unknown) => {
      if (error) this.sendErrors.push({ id, ...describe(error) });
      this.sentUpTo = id;
      this.scheduleFlush();
    };
    try {
      this.socket ??= this.openSocket();
      this.socket.send(datagram, {}, (error) => {
        try {
          completed(error);
        } catch {
          // Never out of a binding callback.
        }
      });
    } catch (error) {
      completed(error);
    }
  }
}

/*
 * By default the binding peeks at each datagram for its size before reading it. With `readBytes`
 * it reads into buffers of that size instead, and the kernel fills a dump's datagrams up to it: a
 * dump of thousands of links comes in far fewer datagrams and reads. Only for the dump thread: the
 * binding allocates the whole buffer for every datagram, and for requests that meant one per
 * acknowledgement (RSS 171-179 MiB against 115-127 MiB converging 1,000 networks; bench/RESULTS.md,
 * "issue 15: before and after").
 */

if (!isMainThread && parentPort && (workerData as { role?: string } | undefined)?.role === REQUEST_THREAD) {
  // Loaded here, in the thread only: importing this module elsewhere (unit tests) needs no binding.
  const { RawNetlinkSocket: Raw } = createRequire(import.meta.url)('netlink/dist/raw.js') as { RawNetlinkSocket: typeof RawNetlinkSocket };
  const readBytes = (workerData as { readBytes?: number }).readBytes;
  const options = readBytes ? ({ messagePeeking: false, msgBufferSize: readBytes } as ConstructorParameters<typeof Raw>[1]) : undefined;
  new RequestThread(parentPort as unknown as AgentPort, () => new Raw(NETLINK_ROUTE, options));
}
