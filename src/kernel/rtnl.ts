/**
 * The rtnetlink adapter: the only module that touches the `netlink` package.
 *
 * Two sockets, because of the library's traps (NOTES-dependencies.md):
 * requests and dumps (requests bounded in flight, one dump at a time) on a
 * raw socket on a worker thread (see RequestChannel and request-worker.ts),
 * and events (RTNLGRP_LINK, and RTNLGRP_NEIGH when asked for; large receive
 * buffer, an overflow replaces the socket and is reported: see LinkEventSocket).
 */
import { EventEmitter } from 'node:events';
import type { RawNetlinkSocket } from 'netlink';
import { RawNetlinkSocket as RawSocket } from 'netlink/dist/raw.js';
import type { Link } from '../model/link.js';
import type { Address } from '../model/address.js';
import { NTF_SELF, type Neighbour } from '../model/neighbour.js';
import { RTM_DELADDR, RTM_GETADDR, RTM_NEWADDR, decodeAddress, encodeAddress, encodeGetAddresses } from './address-codec.js';
import { KernelError } from './errors.js';
import {
  RTM_DELLINK,
  RTM_GETLINK,
  RTM_NEWLINK,
  decodeLink,
  linkIndex,
  encodeDelLink,
  encodeGetLink,
  encodeLinkRequest,
  linkFamily,
  type NewLinkRequest,
} from './link-codec.js';
import {
  AF_BRIDGE,
  AF_UNSPEC,
  NLM_F_ACK,
  NLM_F_APPEND,
  NLM_F_CREATE,
  NLM_F_DUMP,
  NLM_F_DUMP_INTR,
  NLM_F_ECHO,
  NLM_F_EXCL,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_HDRLEN,
  answerErrno,
  extendedAckMessage,
  forEachMessage,
  writeHeader,
} from './netlink.js';
import { RTM_DELNEIGH, RTM_GETNEIGH, RTM_NEWNEIGH, decodeNeighbour, encodeGetNeighbours, encodeNeighbour } from './neighbour-codec.js';
import { startRequestWorker, WorkerRequestSocket } from './request-worker.js';

const NETLINK_ROUTE = 0;
const RTNLGRP_LINK = 1;
const RTNLGRP_NEIGH = 3;
const RTNLGRP_IPV6_IFADDR = 9;
const RECEIVE_BUFFER_BYTES = 32 * 1024 * 1024;
const REQUEST_TIMEOUT_MS = 5000;
const DUMP_TIMEOUT_MS = 15000;
/** The dump thread's reads: the kernel fills a dump's datagrams up to the largest read it has seen (at most 32 KiB). */
const DUMP_READ_BYTES = 32 * 1024;
/** A dump the kernel keeps interrupting (its list changed meanwhile) is read again, at most this often in all. */
const DUMP_ATTEMPTS = 5;
/** One per network the agent applies at once (NETWORKS_IN_FLIGHT); beyond ~50 one socket's receive buffer overflowed. */
const MAX_REQUESTS_IN_FLIGHT = 32;

/** The `op` label of vxnetd_netlink_requests_total: links by verb, forwarding entries as neigh_*. */
export type RequestKind = 'create' | 'change' | 'delete' | 'get' | 'dump' | 'neigh_add' | 'neigh_del' | 'neigh_dump' | 'addr_add' | 'addr_del' | 'addr_dump';

export interface LinkEvent {
  type: 'new' | 'del';
  link: Link;
}

/** An IPv6 address was added, changed (its flags: DAD done or failed) or deleted. */
export interface AddressEvent {
  type: 'new' | 'del';
  address: Address;
}

/** A forwarding entry of a device's own table (AF_BRIDGE, NTF_SELF) was added, changed or deleted. */
export interface NeighbourEvent {
  type: 'new' | 'del';
  neighbour: Neighbour;
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
  /** Forwarding entries (AF_BRIDGE) of every device, or of the device `index`. */
  dumpForwardingEntries(index?: number): Promise<Neighbour[]>;
  /** Adds a forwarding entry beside the device's others with the same MAC (NLM_F_APPEND); an existing one is kept as it is. */
  appendForwardingEntry(entry: Neighbour, operation: string): Promise<void>;
  /** Deletes one forwarding entry (MAC and destination). */
  deleteForwardingEntry(entry: Neighbour, operation: string): Promise<void>;
  /** Addresses of a family (AF_INET6 …) on every device. */
  dumpAddresses(family: number): Promise<Address[]>;
  /** Adds an address (exclusive: an address already there fails with EEXIST). */
  addAddress(address: Address, operation: string): Promise<void>;
  deleteAddress(address: Address, operation: string): Promise<void>;
  /**
   * Stops link notifications while the agent applies in bulk: an overflowing
   * event socket aborts the process inside the netlink library (POLLERR),
   * so the only safe overflow is the one that never happens.
   */
  pauseEvents(): void;
  resumeEvents(): void;
  /** 'link' (LinkEvent), 'neighbour' (NeighbourEvent), 'address' (AddressEvent) when subscribed, and 'overflow' (events were lost: resync everything). */
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

function withReceiveBuffer<S extends Pick<RawNetlinkSocket, 'setRecvBufferSize'>>(socket: S, bytes = RECEIVE_BUFFER_BYTES): S {
  try {
    socket.setRecvBufferSize(bytes);
  } catch {
    // Capped by net.core.rmem_max; the kernel keeps the largest size it allows.
  }
  return socket;
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
  timeoutMs: number;
  deadline: number;
  /** A dump ends with NLMSG_DONE; a request with its acknowledgement. */
  dump: boolean;
  /** A dump's part came with NLM_F_DUMP_INTR: what it returns is inconsistent. */
  interrupted: boolean;
  /** The messages the kernel sent before its acknowledgement or NLMSG_DONE (a GETLINK's link, a create's echo, a dump's parts), without their header. */
  replies: Buffer[];
  resolve(outcome: { replies: Buffer[]; interrupted: boolean }): void;
  reject(error: KernelError): void;
}

/**
 * Requests and dumps on one raw rtnetlink socket, matched to replies by sequence number. A request
 * is complete when the kernel acknowledges it (NLM_F_ACK: the acknowledgement follows any reply or
 * echo, and carries the errno), so a reply or an echo never completes a request whose later part
 * failed; a dump when NLMSG_DONE comes (with its errno). A request costs one promise, one map entry
 * and a share of one timer: ~23 µs of CPU per no-op request at steady state, against ~29 µs with
 * the library's request() (a timer, two promise hops and a copy per request, a message object per
 * reply).
 */
export class RequestChannel {
  private socket: RequestSocket;
  private readonly pending = new Map<number, PendingRequest>();
  private seq = 0;
  private timer?: NodeJS.Timeout;
  /** When the timer fires: a request's deadline may come before a dump's. */
  private timerDue = Infinity;
  /** The kernel runs one dump at a time per socket (EBUSY otherwise): the next waits for this one. */
  private dumpQueue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly timeoutMs: number,
    private readonly onSocketError: (error: Error) => void,
    private readonly createSocket: () => RequestSocket = () => new WorkerRequestSocket(),
    private readonly dumpTimeoutMs = timeoutMs,
  ) {
    this.socket = this.open();
  }

  private open(): RequestSocket {
    const socket = withReceiveBuffer(this.createSocket());
    // Referenced only while requests wait, as the library's sockets are.
    socket.unref();
    socket.on('message', (datagram) => this.receive(datagram));
    socket.on('error', (error) => {
      this.onSocketError(error);
      // A socket already replaced has nothing waiting on it any more.
      if (socket !== this.socket) return;
      // The binding closes a socket after a poll error, and a failed receive may have lost an
      // acknowledgement or a dump's part: fail what waits (the agent plans again from a fresh read)
      // and start afresh.
      this.replaceSocket(`netlink socket error: ${error.message}`);
    });
    return socket;
  }

  /** Resolves with the replies that came before the acknowledgement. */
  async request(type: number, flags: number, payload: Buffer, operation: string): Promise<Buffer[]> {
    return (await this.exchange(type, flags | NLM_F_ACK, payload, operation, this.timeoutMs, false)).replies;
  }

  /**
   * Resolves with every part of the dump. A dump the kernel interrupted (its list changed meanwhile)
   * is read again, up to DUMP_ATTEMPTS times in all; the last is returned even if it was interrupted
   * too (`consistent` false): while devices keep changing (a spawner making taps, the agent's own
   * burst) no dump would ever be whole, and the reconcile copes with a stale view — creates are
   * exclusive and a device gone since fails its change with ENODEV, both retried from a fresh read.
   */
  dump(type: number, payload: Buffer, operation: string): Promise<{ parts: Buffer[]; consistent: boolean }> {
    const run = this.dumpQueue.then(async () => {
      for (let attempt = 1; ; attempt++) {
        const { replies, interrupted } = await this.exchange(type, NLM_F_DUMP, payload, operation, this.dumpTimeoutMs, true);
        if (!interrupted || attempt === DUMP_ATTEMPTS) return { parts: replies, consistent: !interrupted };
      }
    });
    this.dumpQueue = run.catch(() => undefined);
    return run;
  }

  private exchange(type: number, flags: number, payload: Buffer, operation: string, timeoutMs: number, dump: boolean) {
    this.seq = (this.seq % 0xffffffff) + 1;
    const seq = this.seq;
    const header = Buffer.allocUnsafe(NLMSG_HDRLEN);
    writeHeader(header, 0, NLMSG_HDRLEN + payload.length, type, flags | NLM_F_REQUEST, seq);
    return new Promise<{ replies: Buffer[]; interrupted: boolean }>((resolve, reject) => {
      const request: PendingRequest = { operation, timeoutMs, deadline: performance.now() + timeoutMs, dump, interrupted: false, replies: [], resolve, reject };
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
    if (request.deadline < this.timerDue) this.armTimer(request.deadline, request.deadline - performance.now());
  }

  private armTimer(due: number, delayMs: number): void {
    clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => this.expire(), Math.max(1, Math.ceil(delayMs))).unref();
  }

  private send(seq: number, operation: string, message: Buffer[]): void {
    this.socket.send(message, {}, (error?: Error & { code?: string }) => {
      if (error) this.settle(seq, new KernelError(error.code ?? 'EIO', `${operation}: ${error.message}`));
    });
  }

  /** Replies, dump parts, acknowledgements and NLMSG_DONE; a datagram may hold several messages. */
  private receive(datagram: Buffer): void {
    forEachMessage(datagram, (type, flags, seq, start, end) => {
      const request = this.pending.get(seq);
      if (!request) return;
      if (request.dump && flags & NLM_F_DUMP_INTR) request.interrupted = true;
      if (type === NLMSG_ERROR || (type === NLMSG_DONE && request.dump)) {
        const code = answerErrno(datagram, start, end);
        const kernelMessage = code && type === NLMSG_ERROR ? extendedAckMessage(datagram, flags, start, end) : undefined;
        this.settle(seq, code ? KernelError.fromCode(code, request.operation, kernelMessage) : undefined);
      } else {
        request.replies.push(datagram.subarray(start, end));
      }
    });
  }

  private settle(seq: number, error?: KernelError): void {
    const request = this.pending.get(seq);
    if (!request) return;
    this.pending.delete(seq);
    if (this.pending.size === 0) this.socket.unref();
    if (error) request.reject(error);
    else request.resolve(request);
  }

  /** One timer for all requests: it fires for the earliest deadline. */
  private expire(): void {
    this.timer = undefined;
    this.timerDue = Infinity;
    const now = performance.now();
    let next = Infinity;
    for (const [seq, request] of this.pending) {
      if (request.deadline > now) next = Math.min(next, request.deadline);
      else this.settle(seq, new KernelError('ETIMEDOUT', `${request.operation}: no answer from the kernel in ${request.timeoutMs} ms`));
    }
    if (next !== Infinity) this.armTimer(next, next - now);
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

/** What LinkEventSocket uses of a raw rtnetlink socket (a fake one in unit tests). */
export interface EventSocket {
  on(event: 'message', listener: (datagram: Buffer) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  addMembership(group: number): void;
  dropMembership(group: number): void;
  getRecvBufferSize(): number;
  close(): void;
}

/**
 * The one socket subscribed to link notifications (RTNLGRP_LINK). An overflow (events were lost)
 * that the binding meets in recvmsg() comes as an 'error' and leaves the socket open and
 * subscribed; it is left (membership dropped, closed) before a fresh one subscribes, so at most
 * one is ever subscribed, and whatever a replaced socket still delivers is ignored. An overflow
 * that the event loop's poll meets first (POLLERR) aborts the process inside the binding (it builds
 * that error with a null syscall name): hence the large receive buffer and pauseEvents().
 */
export class LinkEventSocket {
  private socket?: EventSocket;
  private paused = false;
  private closed = false;
  private retry?: NodeJS.Timeout;

  constructor(
    private readonly openSocket: () => EventSocket,
    private readonly onDatagram: (datagram: Buffer) => void,
    /** Events were lost (or could not be received): the agent resyncs everything. */
    private readonly onLost: (error: Error) => void,
    /** The notification groups joined: link changes, and neighbour changes for agents that keep forwarding entries. */
    private readonly groups: readonly number[] = [RTNLGRP_LINK],
  ) {}

  /** Throws when no socket can be opened or subscribed. */
  subscribe(): void {
    if (this.socket || this.closed) return;
    const socket = this.openSocket();
    socket.on('message', (datagram) => {
      // An exception escaping this handler aborts the process inside the native binding.
      try {
        if (socket === this.socket) this.onDatagram(datagram);
      } catch (error) {
        this.onLost(error as Error);
      }
    });
    socket.on('error', (error) => {
      try {
        if (socket !== this.socket) return;
        this.leave(socket);
        this.resubscribe();
        this.onLost(error);
      } catch {
        // Never out of a binding callback.
      }
    });
    this.socket = socket;
    if (!this.paused) this.join(socket);
  }

  /** After a failure: out of file descriptors or memory, it tries again later; meanwhile the agent knows nothing is heard. */
  private resubscribe(): void {
    try {
      this.subscribe();
    } catch (error) {
      this.retry ??= setTimeout(() => {
        this.retry = undefined;
        this.resubscribe();
      }, 1000).unref();
      this.onLost(error as Error);
    }
  }

  /** Bytes the kernel granted the socket; small values mean net.core.rmem_max is low. */
  receiveBufferBytes(): number | undefined {
    return this.socket?.getRecvBufferSize();
  }

  pause(): void {
    if (this.paused) return;
    this.paused = true;
    if (this.socket) for (const group of this.groups) this.socket.dropMembership(group);
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.socket) this.join(this.socket);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retry);
    if (this.socket) this.leave(this.socket);
  }

  private join(socket: EventSocket): void {
    try {
      for (const group of this.groups) socket.addMembership(group);
    } catch (error) {
      this.leave(socket);
      throw error;
    }
  }

  private leave(socket: EventSocket): void {
    if (this.socket === socket) this.socket = undefined;
    for (const group of this.groups) {
      try {
        socket.dropMembership(group);
      } catch {
        // Closed by the binding already (after a poll error): no membership left either.
      }
    }
    try {
      socket.close();
    } catch {
      // Already closed.
    }
  }
}

export interface NetlinkKernelOptions {
  /** The event socket's receive buffer; only tests ask for a small one, to make it overflow. */
  eventReceiveBufferBytes?: number;
  /**
   * Also hear forwarding-entry changes (RTNLGRP_NEIGH): only agents that keep flood entries ask,
   * since every MAC a bridge learns or forgets is a notification too.
   */
  neighbourEvents?: boolean;
  /** Also hear IPv6 address changes (RTNLGRP_IPV6_IFADDR): routers, which keep addresses on bridges. */
  addressEvents?: boolean;
}

export class NetlinkKernel implements Kernel {
  readonly events = new EventEmitter();
  private readonly requests = new RequestChannel(REQUEST_TIMEOUT_MS, (error) => this.events.emit('socket-error', 'request', error));
  /**
   * Dumps on a channel (and request thread) of their own: on the requests' socket a dump's hundreds
   * of KiB queue ahead of the acknowledgements, so every apply waited for it, applies piled up into
   * bulk applies, and those asked for more dumps (bench/RESULTS.md, "issue 15: before and after").
   */
  private readonly dumps = new RequestChannel(
    DUMP_TIMEOUT_MS,
    (error) => this.events.emit('socket-error', 'dump', error),
    () => new WorkerRequestSocket(startRequestWorker({ readBytes: DUMP_READ_BYTES })),
    DUMP_TIMEOUT_MS,
  );
  private readonly eventSocket: LinkEventSocket;
  private readonly inFlight = new Semaphore(MAX_REQUESTS_IN_FLIGHT);
  private closed = false;

  constructor(
    private readonly observer: KernelObserver = {},
    options: NetlinkKernelOptions = {},
  ) {
    this.eventSocket = new LinkEventSocket(
      () => withReceiveBuffer(new RawSocket(NETLINK_ROUTE), options.eventReceiveBufferBytes),
      (datagram) => this.dispatchEvents(datagram),
      (error) => this.events.emit('overflow', error),
      [RTNLGRP_LINK, ...(options.neighbourEvents ? [RTNLGRP_NEIGH] : []), ...(options.addressEvents ? [RTNLGRP_IPV6_IFADDR] : [])],
    );
  }

  /** Subscribes to link notifications on a socket of their own. */
  subscribe(): void {
    this.eventSocket.subscribe();
  }

  /** Bytes the kernel granted the event socket; small values mean net.core.rmem_max is low. */
  eventBufferBytes(): number | undefined {
    return this.eventSocket.receiveBufferBytes();
  }

  pauseEvents(): void {
    this.eventSocket.pause();
  }

  resumeEvents(): void {
    this.eventSocket.resume();
  }

  private dispatchEvents(datagram: Buffer): void {
    forEachMessage(datagram, (type, _flags, _seq, start, end) => {
      if (type === RTM_NEWNEIGH || type === RTM_DELNEIGH) return this.dispatchNeighbour(type, datagram.subarray(start, end));
      if (type === RTM_NEWADDR || type === RTM_DELADDR) {
        this.events.emit('address', { type: type === RTM_NEWADDR ? 'new' : 'del', address: decodeAddress(datagram.subarray(start, end)) } satisfies AddressEvent);
        return;
      }
      if (type !== RTM_NEWLINK && type !== RTM_DELLINK) return;
      const payload = datagram.subarray(start, end);
      // A port leaving a bridge also sends an AF_BRIDGE RTM_DELLINK for a device that still exists.
      if (linkFamily(payload) !== AF_UNSPEC) return;
      this.events.emit('link', { type: type === RTM_NEWLINK ? 'new' : 'del', link: decodeLink(payload) } satisfies LinkEvent);
    });
  }

  /** Only a device's own forwarding entries matter here; a bridge's learned MACs (NTF_MASTER) and ND/ARP entries do not. */
  private dispatchNeighbour(type: number, payload: Buffer): void {
    if (payload.length < 12 || payload.readUInt8(0) !== AF_BRIDGE || !(payload.readUInt8(10) & NTF_SELF)) return;
    this.events.emit('neighbour', { type: type === RTM_NEWNEIGH ? 'new' : 'del', neighbour: decodeNeighbour(payload) } satisfies NeighbourEvent);
  }

  async dumpForwardingEntries(index?: number): Promise<Neighbour[]> {
    const operation = index === undefined ? 'dump forwarding entries' : `dump forwarding entries of device ${index}`;
    const parts = await this.dump('neigh_dump', RTM_GETNEIGH, encodeGetNeighbours(AF_BRIDGE, index), operation);
    return parts.map(decodeNeighbour).filter((entry) => index === undefined || entry.index === index);
  }

  async appendForwardingEntry(entry: Neighbour, operation: string): Promise<void> {
    await this.request('neigh_add', RTM_NEWNEIGH, encodeNeighbour(entry), NLM_F_CREATE | NLM_F_APPEND, operation);
  }

  async deleteForwardingEntry(entry: Neighbour, operation: string): Promise<void> {
    await this.request('neigh_del', RTM_DELNEIGH, encodeNeighbour(entry), 0, operation);
  }

  async dumpAddresses(family: number): Promise<Address[]> {
    return (await this.dump('addr_dump', RTM_GETADDR, encodeGetAddresses(family), 'dump addresses')).map(decodeAddress);
  }

  async addAddress(address: Address, operation: string): Promise<void> {
    await this.request('addr_add', RTM_NEWADDR, encodeAddress(address), NLM_F_CREATE | NLM_F_EXCL, operation);
  }

  async deleteAddress(address: Address, operation: string): Promise<void> {
    await this.request('addr_del', RTM_DELADDR, encodeAddress(address), 0, operation);
  }

  async dumpLinks(opts: { stats?: boolean } = {}): Promise<Link[]> {
    // Every part of a link dump is an RTM_NEWLINK.
    return (await this.dump('dump', RTM_GETLINK, encodeGetLink({ withStats: opts.stats }), 'dump links')).map((payload) => decodeLink(payload, opts));
  }

  /** A dump on the dumps' channel, counted by kind: `EINTR` when the kernel kept interrupting it. */
  private async dump(kind: RequestKind, type: number, payload: Buffer, operation: string): Promise<Buffer[]> {
    if (this.closed) throw new KernelError('ESHUTDOWN', operation);
    try {
      const { parts, consistent } = await this.dumps.dump(type, payload, operation);
      this.observer.request?.(kind, consistent ? 'ok' : 'EINTR');
      return parts;
    } catch (error) {
      this.observer.request?.(kind, error instanceof KernelError ? error.errno : 'error');
      throw error;
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
    this.eventSocket.close();
    await Promise.all([this.requests.close(), this.dumps.close()]);
  }
}
