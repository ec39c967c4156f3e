/**
 * The rtnetlink adapter: the only module that touches the `netlink` package.
 *
 * Three sockets, because of the library's traps (NOTES-dependencies.md):
 * requests (bounded in flight, on the library's raw socket on a worker thread:
 * see RequestChannel and request-worker.ts), dumps (one at a time, replaced
 * after a failure) and events (RTNLGRP_LINK, large receive buffer, overflow is
 * reported instead of killing the process).
 */
import { EventEmitter } from 'node:events';
import type { NetlinkMessage, NetlinkSocket, RawNetlinkSocket } from 'netlink';
// The package's index also loads its generic-netlink, nl80211 and WireGuard modules: ~20 ms that rtnetlink does not need.
import { Protocol } from 'netlink/dist/constants.js';
import { createNetlink } from 'netlink/dist/netlink.js';
import {
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_ECHO,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  decodeLink,
  linkIndex,
  encodeDelLink,
  encodeGetLink,
  encodeLinkRequest,
  linkFamily,
  type Link,
  type NewLinkRequest,
} from './codec.js';
import { KernelError } from './errors.js';
import { WorkerRequestSocket } from './request-worker.js';

const NLMSG_ERROR = 2;
const NLMSG_HDRLEN = 16;
const NLM_F_ACK = 0x4;
const RTNLGRP_LINK = 1;
const RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 5000;
const DUMP_TIMEOUT_MS = 15000;
/** One per network the agent applies at once (NETWORKS_IN_FLIGHT); beyond ~50 one socket's receive buffer overflowed. */
const MAX_REQUESTS_IN_FLIGHT = 32;

export type RequestKind = 'create' | 'change' | 'delete' | 'get' | 'dump';

export interface LinkEvent {
  type: 'new' | 'del';
  link: Link;
}

export interface KernelObserver {
  request?(kind: RequestKind, result: string): void;
}

/** What the agent needs from the kernel; the fake kernel in test/ implements it too. */
export interface Kernel {
  dumpLinks(opts?: { stats?: boolean }): Promise<Link[]>;
  getLink(name: string): Promise<Link | undefined>;
  /** Resolves with the new device's ifindex when the kernel echoes it (6.2 and later), else undefined. */
  createLink(req: NewLinkRequest, operation: string): Promise<number | undefined>;
  changeLink(req: NewLinkRequest, operation: string): Promise<void>;
  deleteLink(index: number, operation: string): Promise<void>;
  /**
   * Stops link notifications while the agent applies in bulk: an overflowing
   * event socket aborts the process inside the netlink library (POLLERR),
   * so the only safe overflow is the one that never happens.
   */
  pauseEvents(): void;
  resumeEvents(): void;
  /** 'link' (LinkEvent) and 'overflow' (events were lost: resync everything). */
  readonly events: EventEmitter;
  /** Resolves when the request thread has ended: exit the process only after that. */
  close(): Promise<void>;
}

class Semaphore {
  private waiting: Array<() => void> = [];
  private active = 0;
  constructor(private readonly limit: number) {}
  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.active++;
    try {
      return await task();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** Dump replies pack many links per datagram; without peeking they are read 64 KiB at a time instead of one link per read. */
const DUMP_READ_BUFFER_BYTES = 64 * 1024;

function openSocket(opts: { forDumps?: boolean } = {}): NetlinkSocket {
  const socket = opts.forDumps
    ? createNetlink(Protocol.ROUTE, { messagePeeking: false, msgBufferSize: DUMP_READ_BUFFER_BYTES } as Parameters<typeof createNetlink>[1])
    : createNetlink(Protocol.ROUTE);
  return withLargeReceiveBuffer(socket);
}

function withLargeReceiveBuffer<S extends Pick<RawNetlinkSocket, 'setRecvBufferSize'>>(socket: S): S {
  try {
    socket.setRecvBufferSize(RECEIVE_BUFFER_BYTES);
  } catch {
    // Capped by net.core.rmem_max; the kernel keeps the largest size it allows.
  }
  return socket;
}

function errnoOf(message: NetlinkMessage): number {
  return message.type === NLMSG_ERROR ? -message.data.readInt32LE(0) : 0;
}

/** What RequestChannel uses of a raw rtnetlink socket: WorkerRequestSocket, or a fake one in unit tests. */
export interface RequestSocket {
  send(message: Buffer[], options: object, callback: (error?: Error & { code?: string }) => void): void;
  on(event: 'message', listener: (datagram: Buffer) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  ref(): void;
  unref(): void;
  /** May resolve later, when the socket is really closed (WorkerRequestSocket). */
  close(): void | Promise<void>;
  setRecvBufferSize(bytes: number): void;
}

interface PendingRequest {
  operation: string;
  deadline: number;
  /** The messages the kernel sent before its acknowledgement (a GETLINK's link, a create's echo), without their header. */
  replies: Buffer[];
  resolve(replies: Buffer[]): void;
  reject(error: KernelError): void;
}

/**
 * Requests on one raw rtnetlink socket, matched to replies by sequence number and complete when
 * the kernel acknowledges them (NLM_F_ACK: the acknowledgement follows any reply or echo, and
 * carries the errno), so a reply or an echo never completes a request whose later part failed.
 * A request costs one promise, one map entry and a share of one timer: ~23 µs of CPU per
 * no-op request at steady state, against ~29 µs with the library's request() (a timer, two
 * promise hops and a copy per request, a message object per reply).
 */
export class RequestChannel {
  private socket: RequestSocket;
  private readonly pending = new Map<number, PendingRequest>();
  private seq = 0;
  private timer?: NodeJS.Timeout;

  constructor(
    private readonly timeoutMs: number,
    private readonly onSocketError: (error: Error) => void,
    private readonly createSocket: () => RequestSocket = () => new WorkerRequestSocket(),
  ) {
    this.socket = this.open();
  }

  private open(): RequestSocket {
    const socket = withLargeReceiveBuffer(this.createSocket());
    // Referenced only while requests wait, as the library's sockets are.
    socket.unref();
    socket.on('message', (datagram) => this.receive(datagram));
    socket.on('error', (error) => {
      this.onSocketError(error);
      // A socket already replaced has nothing waiting on it any more.
      if (socket !== this.socket) return;
      // The binding closes a socket after a poll error, and a failed receive may have lost an
      // acknowledgement: fail what waits (the agent plans again from a fresh read) and start afresh.
      this.replaceSocket(`netlink socket error: ${error.message}`);
    });
    return socket;
  }

  request(type: number, flags: number, payload: Buffer, operation: string): Promise<Buffer[]> {
    this.seq = (this.seq % 0xffffffff) + 1;
    const seq = this.seq;
    const header = Buffer.allocUnsafe(NLMSG_HDRLEN);
    header.writeUInt32LE(NLMSG_HDRLEN + payload.length, 0);
    header.writeUInt16LE(type, 4);
    header.writeUInt16LE(flags | NLM_F_REQUEST | NLM_F_ACK, 6);
    header.writeUInt32LE(seq, 8);
    header.writeUInt32LE(0, 12);
    return new Promise<Buffer[]>((resolve, reject) => {
      const request: PendingRequest = { operation, deadline: performance.now() + this.timeoutMs, replies: [], resolve, reject };
      const trackAndSend = () => {
        this.track(seq, request);
        this.send(seq, operation, [header, payload]);
      };
      try {
        trackAndSend();
      } catch {
        // Closed under us (after a poll error): nothing was sent, so once more on a fresh socket.
        this.pending.delete(seq);
        this.replaceSocket('netlink socket closed');
        try {
          trackAndSend();
        } catch (error) {
          this.settle(seq, new KernelError('EIO', `${operation}: ${(error as Error).message}`));
        }
      }
    });
  }

  private track(seq: number, request: PendingRequest): void {
    if (this.pending.size === 0) this.socket.ref();
    this.pending.set(seq, request);
    this.timer ??= setTimeout(() => this.expire(), this.timeoutMs).unref();
  }

  private send(seq: number, operation: string, message: Buffer[]): void {
    this.socket.send(message, {}, (error?: Error & { code?: string }) => {
      if (error) this.settle(seq, new KernelError(error.code ?? 'EIO', `${operation}: ${error.message}`));
    });
  }

  /** Replies and acknowledgements; a datagram may hold several messages. */
  private receive(datagram: Buffer): void {
    for (let offset = 0; offset + NLMSG_HDRLEN <= datagram.length; ) {
      const length = datagram.readUInt32LE(offset);
      if (length < NLMSG_HDRLEN || offset + length > datagram.length) return;
      const type = datagram.readUInt16LE(offset + 4);
      const request = this.pending.get(datagram.readUInt32LE(offset + 8));
      if (request && type === NLMSG_ERROR && length >= NLMSG_HDRLEN + 4) {
        const code = -datagram.readInt32LE(offset + NLMSG_HDRLEN);
        this.settle(datagram.readUInt32LE(offset + 8), code ? KernelError.fromCode(code, request.operation) : undefined);
      } else if (request) {
        request.replies.push(datagram.subarray(offset + NLMSG_HDRLEN, offset + length));
      }
      offset += (length + 3) & ~3;
    }
  }

  private settle(seq: number, error?: KernelError): void {
    const request = this.pending.get(seq);
    if (!request) return;
    this.pending.delete(seq);
    if (this.pending.size === 0) this.socket.unref();
    if (error) request.reject(error);
    else request.resolve(request.replies);
  }

  /** One timer for all requests: they wait in sending order, so the oldest expire first. */
  private expire(): void {
    this.timer = undefined;
    const now = performance.now();
    for (const [seq, request] of this.pending) {
      if (request.deadline > now) {
        this.timer = setTimeout(() => this.expire(), Math.max(1, Math.ceil(request.deadline - now))).unref();
        return;
      }
      this.settle(seq, new KernelError('ETIMEDOUT', `${request.operation}: no answer from the kernel in ${this.timeoutMs} ms`));
    }
  }

  private replaceSocket(why: string): void {
    this.failAll('EIO', why);
    void this.closeSocket();
    this.socket = this.open();
  }

  private async closeSocket(): Promise<void> {
    try {
      await this.socket.close();
    } catch {
      // Already closed by the binding.
    }
  }

  private failAll(errno: string, why: string): void {
    for (const seq of [...this.pending.keys()]) this.settle(seq, new KernelError(errno, `${this.pending.get(seq)!.operation}: ${why}`));
  }

  close(): Promise<void> {
    this.failAll('ESHUTDOWN', 'vxnetd is stopping');
    clearTimeout(this.timer);
    return this.closeSocket();
  }
}

export class NetlinkKernel implements Kernel {
  readonly events = new EventEmitter();
  private readonly requests = new RequestChannel(REQUEST_TIMEOUT_MS, (error) => this.events.emit('socket-error', 'request', error));
  private dumpSocket = openSocket({ forDumps: true });
  private eventSocket?: NetlinkSocket;
  private readonly inFlight = new Semaphore(MAX_REQUESTS_IN_FLIGHT);
  private dumpQueue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly observer: KernelObserver = {}) {
    this.watchForErrors(this.dumpSocket, 'dump');
  }

  private eventsPaused = false;

  /** Subscribes to link notifications on a socket of their own. */
  subscribe(): void {
    if (this.eventSocket) return;
    const socket = openSocket();
    if (!this.eventsPaused) socket.addMembership(RTNLGRP_LINK);
    socket.ref(true);
    socket.on('message', (messages) => {
      // An exception escaping this handler aborts the process inside the native binding.
      try {
        for (const message of messages) this.dispatchEvent(message);
      } catch (error) {
        this.events.emit('overflow', error);
      }
    });
    socket.on('invalid', () => this.events.emit('overflow', new Error('unparsable link notification')));
    socket.on('error', (error) => {
      // The library closes a socket after an error: open a new one, then resync what was missed.
      this.eventSocket = undefined;
      if (!this.closed) this.subscribe();
      this.events.emit('overflow', error);
    });
    this.eventSocket = socket;
  }

  /** Bytes the kernel granted the event socket; small values mean net.core.rmem_max is low. */
  eventBufferBytes(): number | undefined {
    return this.eventSocket?.getRecvBufferSize();
  }

  pauseEvents(): void {
    if (this.eventsPaused) return;
    this.eventsPaused = true;
    this.eventSocket?.dropMembership(RTNLGRP_LINK);
  }

  resumeEvents(): void {
    if (!this.eventsPaused) return;
    this.eventsPaused = false;
    this.eventSocket?.addMembership(RTNLGRP_LINK);
  }

  private dispatchEvent(message: NetlinkMessage): void {
    if (message.type !== RTM_NEWLINK && message.type !== RTM_DELLINK) return;
    // A port leaving a bridge also sends an AF_BRIDGE RTM_DELLINK for a device that still exists.
    if (linkFamily(message.data) !== 0) return;
    const link = decodeLink(message.data);
    this.events.emit('link', { type: message.type === RTM_NEWLINK ? 'new' : 'del', link } satisfies LinkEvent);
  }

  private watchForErrors(socket: NetlinkSocket, role: string): void {
    // Without a listener an ENOBUFS from recvmsg is thrown inside the native poll handler.
    socket.on('error', (error) => this.events.emit('socket-error', role, error));
    socket.on('invalid', () => undefined);
  }

  async dumpLinks(opts: { stats?: boolean } = {}): Promise<Link[]> {
    // One dump at a time per socket; queue behind any dump in progress.
    const run = this.dumpQueue.then(() => this.dumpOnce(opts));
    this.dumpQueue = run.catch(() => undefined);
    return run;
  }

  private async dumpOnce(opts: { stats?: boolean }): Promise<Link[]> {
    try {
      const [messages] = await this.dumpSocket.request(RTM_GETLINK, encodeGetLink({ withStats: opts.stats }), {
        flags: NLM_F_DUMP,
        timeout: DUMP_TIMEOUT_MS,
        checkError: false,
      });
      const links: Link[] = [];
      for (const message of messages) {
        if (message.type === NLMSG_ERROR) {
          const code = errnoOf(message);
          if (code) throw KernelError.fromCode(code, 'dump links');
          continue;
        }
        if (message.type === RTM_NEWLINK) links.push(decodeLink(message.data, opts));
      }
      this.observer.request?.('dump', 'ok');
      return links;
    } catch (error) {
      this.observer.request?.('dump', error instanceof KernelError ? error.errno : 'error');
      // A failed dump can leave half a multipart message behind: start afresh.
      this.dumpSocket.close();
      this.dumpSocket = openSocket({ forDumps: true });
      this.watchForErrors(this.dumpSocket, 'dump');
      throw error instanceof KernelError ? error : new KernelError('EIO', `dump links: ${(error as Error).message}`);
    }
  }

  async getLink(name: string): Promise<Link | undefined> {
    try {
      const [reply] = await this.request('get', RTM_GETLINK, encodeGetLink({ name }), 0, `get link ${name}`);
      return reply ? decodeLink(reply) : undefined;
    } catch (error) {
      if (error instanceof KernelError && error.errno === 'ENODEV') return undefined;
      throw error;
    }
  }

  async createLink(req: NewLinkRequest, operation: string): Promise<number | undefined> {
    // Only a master-less device's ifindex is asked for (the bridge's, for its vxlan): the echo costs
    // the kernel a whole link message.
    const echo = req.master === undefined ? NLM_F_ECHO : 0;
    const [reply] = await this.request('create', RTM_NEWLINK, encodeLinkRequest(req), NLM_F_CREATE | NLM_F_EXCL | echo, operation);
    return reply ? linkIndex(reply) : undefined;
  }

  async changeLink(req: NewLinkRequest, operation: string): Promise<void> {
    await this.request('change', RTM_NEWLINK, encodeLinkRequest(req), 0, operation);
  }

  async deleteLink(index: number, operation: string): Promise<void> {
    await this.request('delete', RTM_DELLINK, encodeDelLink(index), 0, operation);
  }

  private request(kind: RequestKind, type: number, payload: Buffer, flags: number, operation: string): Promise<Buffer[]> {
    if (this.closed) return Promise.reject(new KernelError('ESHUTDOWN', operation));
    return this.inFlight.run(async () => {
      try {
        const replies = await this.requests.request(type, flags, payload, operation);
        this.observer.request?.(kind, 'ok');
        return replies;
      } catch (error) {
        this.observer.request?.(kind, error instanceof KernelError ? error.errno : 'error');
        throw error;
      }
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const socket of [this.dumpSocket, this.eventSocket]) {
      try {
        socket?.close();
      } catch {
        // Already closed.
      }
    }
    await this.requests.close();
  }
}
