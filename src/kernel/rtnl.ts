/**
 * The rtnetlink adapter: the only module that touches the `netlink` package.
 *
 * Three sockets, because of the library's traps (NOTES-dependencies.md):
 * requests (bounded in flight), dumps (one at a time, replaced after a
 * failure) and events (RTNLGRP_LINK, large receive buffer, overflow is
 * reported instead of killing the process).
 */
import { EventEmitter } from 'node:events';
import type * as netlink from 'netlink';
import type { NetlinkMessage, NetlinkSocket } from 'netlink';
import { requireCommonJs } from '../commonjs.js';
import {
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_ECHO,
  NLM_F_EXCL,
  decodeLink,
  encodeDelLink,
  encodeGetLink,
  encodeLinkRequest,
  linkFamily,
  type Link,
  type NewLinkRequest,
} from './codec.js';
import { KernelError } from './errors.js';

// The package's index also loads its generic-netlink, nl80211 and WireGuard modules: ~20 ms that rtnetlink does not need.
const { createNetlink } = requireCommonJs('netlink/dist/netlink.js') as Pick<typeof netlink, 'createNetlink'>;
const { Protocol } = requireCommonJs('netlink/dist/constants.js') as Pick<typeof netlink, 'Protocol'>;

const NLMSG_ERROR = 2;
const RTNLGRP_LINK = 1;
const RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 5000;
const DUMP_TIMEOUT_MS = 15000;
/** Beyond ~50 concurrent requests one socket's receive buffer overflowed. */
const MAX_REQUESTS_IN_FLIGHT = 16;

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
  close(): void;
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

export class NetlinkKernel implements Kernel {
  readonly events = new EventEmitter();
  private requestSocket = openSocket();
  // Given on every send: otherwise the library calls getsockname() for each request.
  private readonly requestPort = this.requestSocket.address().port;
  private dumpSocket = openSocket({ forDumps: true });
  private eventSocket?: NetlinkSocket;
  private readonly inFlight = new Semaphore(MAX_REQUESTS_IN_FLIGHT);
  private dumpQueue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(private readonly observer: KernelObserver = {}) {
    this.watchForErrors(this.requestSocket, 'request');
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
      return reply && reply.type === RTM_NEWLINK ? decodeLink(reply.data) : undefined;
    } catch (error) {
      if (error instanceof KernelError && error.errno === 'ENODEV') return undefined;
      throw error;
    }
  }

  async createLink(req: NewLinkRequest, operation: string): Promise<number | undefined> {
    // The echo saves a GETLINK for the ifindex. It is sent before IFLA_MASTER is applied, which can
    // still fail, and the library resolves on the first reply: so only ask when there is no master.
    const echo = req.master === undefined ? NLM_F_ECHO : 0;
    const [reply] = await this.request('create', RTM_NEWLINK, encodeLinkRequest(req), NLM_F_CREATE | NLM_F_EXCL | echo, operation);
    return reply && reply.type === RTM_NEWLINK ? decodeLink(reply.data).index : undefined;
  }

  async changeLink(req: NewLinkRequest, operation: string): Promise<void> {
    await this.request('change', RTM_NEWLINK, encodeLinkRequest(req), 0, operation);
  }

  async deleteLink(index: number, operation: string): Promise<void> {
    await this.request('delete', RTM_DELLINK, encodeDelLink(index), 0, operation);
  }

  private request(kind: RequestKind, type: number, payload: Buffer, flags: number, operation: string): Promise<NetlinkMessage[]> {
    if (this.closed) return Promise.reject(new KernelError('ESHUTDOWN', operation));
    return this.inFlight.run(async () => {
      let messages: NetlinkMessage[];
      try {
        [messages] = await this.requestSocket.request(type, payload, { flags, localPort: this.requestPort, timeout: REQUEST_TIMEOUT_MS, checkError: false });
      } catch (error) {
        const timedOut = /timeout/i.test((error as Error).message);
        this.observer.request?.(kind, timedOut ? 'ETIMEDOUT' : 'error');
        throw new KernelError(timedOut ? 'ETIMEDOUT' : 'EIO', `${operation}: ${(error as Error).message}`);
      }
      const code = messages[0] ? errnoOf(messages[0]) : 0;
      if (code) {
        const failure = KernelError.fromCode(code, operation);
        this.observer.request?.(kind, failure.errno);
        throw failure;
      }
      this.observer.request?.(kind, 'ok');
      return messages;
    });
  }

  close(): void {
    this.closed = true;
    for (const socket of [this.requestSocket, this.dumpSocket, this.eventSocket]) {
      try {
        socket?.close();
      } catch {
        // Already closed.
      }
    }
  }
}
