/**
 * The link-event socket (src/kernel/rtnl.ts LinkEventSocket) against fake raw sockets: at most one
 * socket is ever subscribed to RTNLGRP_LINK, whatever fails; a replaced socket is left before its
 * successor joins, and what it still delivers is ignored. native-tests/kernel.test.ts overflows
 * the real one.
 */
import { EventEmitter } from 'node:events';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LinkEventSocket, type EventSocket } from '../src/kernel/rtnl.js';

const RTNLGRP_LINK = 1;

/** Every socket's membership changes and closes, in the order they happened. */
let log: string[];

class FakeEventSocket extends EventEmitter {
  readonly groups = new Set<number>();
  closed = false;
  constructor(readonly id: number) {
    super();
  }
  addMembership(group: number): void {
    if (this.closed) throw new Error('Netlink socket is closed');
    this.groups.add(group);
    log.push(`${this.id} join`);
  }
  dropMembership(group: number): void {
    if (this.closed) throw new Error('Netlink socket is closed');
    this.groups.delete(group);
    log.push(`${this.id} leave`);
  }
  close(): void {
    this.closed = true;
    log.push(`${this.id} close`);
  }
  getRecvBufferSize(): number {
    return 4096;
  }
}

function setUp(opts: { openFails?: () => boolean } = {}) {
  log = [];
  const sockets: FakeEventSocket[] = [];
  const datagrams: string[] = [];
  const lost: string[] = [];
  const events = new LinkEventSocket(
    () => {
      if (opts.openFails?.()) throw new Error('socket: Too many open files');
      const socket = new FakeEventSocket(sockets.length);
      sockets.push(socket);
      return socket as unknown as EventSocket;
    },
    (datagram) => datagrams.push(datagram.toString()),
    (error) => lost.push(error.message),
  );
  const subscribed = () => sockets.filter((s) => !s.closed && s.groups.has(RTNLGRP_LINK)).length;
  return { events, sockets, datagrams, lost, subscribed };
}

describe('LinkEventSocket', () => {
  afterEach(() => vi.useRealTimers());

  it('subscribes one socket to RTNLGRP_LINK and passes its datagrams on', () => {
    const { events, sockets, datagrams, subscribed } = setUp();
    events.subscribe();
    events.subscribe();
    expect(sockets).toHaveLength(1);
    expect(subscribed()).toBe(1);
    sockets[0]!.emit('message', Buffer.from('newlink'));
    expect(datagrams).toEqual(['newlink']);
  });

  it('after each overflow leaves the old socket (membership dropped, closed) before a fresh one joins: one subscribed, whatever happens', () => {
    const { events, sockets, lost, subscribed } = setUp();
    events.subscribe();
    for (let i = 0; i < 5; i++) {
      sockets.at(-1)!.emit('error', new Error('recvmsg: No buffer space available'));
      expect(subscribed()).toBe(1);
    }
    expect(sockets).toHaveLength(6);
    expect(lost).toEqual(Array(5).fill('recvmsg: No buffer space available'));
    expect(log.slice(0, 4)).toEqual(['0 join', '0 leave', '0 close', '1 join']);
  });

  it('ignores datagrams and errors from a socket it has replaced', () => {
    const { events, sockets, datagrams, lost, subscribed } = setUp();
    events.subscribe();
    const old = sockets[0]!;
    old.emit('error', new Error('overflow'));
    old.emit('message', Buffer.from('stale newlink'));
    old.emit('error', new Error('late error'));
    expect(datagrams).toEqual([]);
    expect(lost).toEqual(['overflow']);
    expect(sockets).toHaveLength(2);
    sockets[1]!.emit('message', Buffer.from('fresh newlink'));
    expect(datagrams).toEqual(['fresh newlink']);
    expect(subscribed()).toBe(1);
  });

  it('while paused, a replacement stays out of the group until resumed', () => {
    const { events, sockets, subscribed } = setUp();
    events.subscribe();
    events.pause();
    expect(subscribed()).toBe(0);
    sockets[0]!.emit('error', new Error('overflow'));
    expect(subscribed()).toBe(0);
    events.resume();
    expect(subscribed()).toBe(1);
    expect(sockets[1]!.groups.has(RTNLGRP_LINK)).toBe(true);
  });

  it('reports a handler that throws as lost events, and throws nothing into the binding', () => {
    const { sockets, lost } = setUp();
    const events = new LinkEventSocket(
      () => {
        const socket = new FakeEventSocket(sockets.length);
        sockets.push(socket);
        return socket as unknown as EventSocket;
      },
      () => {
        throw new Error('unparsable');
      },
      (error) => lost.push(error.message),
    );
    events.subscribe();
    expect(() => sockets[0]!.emit('message', Buffer.from('x'))).not.toThrow();
    expect(lost).toEqual(['unparsable']);
  });

  it('when no socket can be opened after an overflow, reports it and tries again later', () => {
    vi.useFakeTimers();
    let failing = false;
    const { events, sockets, lost, subscribed } = setUp({ openFails: () => failing });
    events.subscribe();
    failing = true;
    expect(() => sockets[0]!.emit('error', new Error('overflow'))).not.toThrow();
    expect(lost).toEqual(['socket: Too many open files', 'overflow']);
    expect(subscribed()).toBe(0);
    failing = false;
    vi.advanceTimersByTime(1000);
    expect(subscribed()).toBe(1);
  });

  it('throws when the first socket cannot be opened: the agent must not start deaf', () => {
    const { events, lost } = setUp({ openFails: () => true });
    expect(() => events.subscribe()).toThrow('socket: Too many open files');
    expect(lost).toEqual([]);
  });

  it('leaves its socket when closed and subscribes no more', () => {
    const { events, sockets, subscribed } = setUp();
    events.subscribe();
    events.close();
    events.subscribe();
    expect(sockets).toHaveLength(1);
    expect(sockets[0]!.closed).toBe(true);
    expect(subscribed()).toBe(0);
  });
});
