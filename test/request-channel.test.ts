/**
 * The rtnetlink request path (src/kernel/rtnl.ts RequestChannel) against a fake raw socket:
 * replies matched by sequence number, completion by the acknowledgement, errno, timeouts, and a
 * socket that fails or closes under it; dumps on the same path (parts, NLMSG_DONE, interrupted
 * dumps read again, one at a time). The real kernel is exercised by native-tests/kernel.test.ts.
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RTM_GETLINK, RTM_NEWLINK } from '../src/kernel/link-codec.js';
import { KernelError } from '../src/kernel/errors.js';
import { RequestChannel, type RequestSocket } from '../src/kernel/rtnl.js';

/** The kernel's acknowledgement (struct nlmsgerr), errno 0 for success. */
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLM_F_MULTI = 0x2;
const NLM_F_DUMP = 0x300;
const NLM_F_DUMP_INTR = 0x10;

interface Sent {
  type: number;
  flags: number;
  seq: number;
  payload: Buffer;
}

class FakeSocket extends EventEmitter {
  readonly sent: Sent[] = [];
  closed = false;
  referenced = true;
  /** Makes the next send throw as the binding does on a closed socket. */
  throwOnSend = false;
  send(message: Buffer | Buffer[], _options: unknown, callback?: (error?: Error) => void): void {
    if (this.throwOnSend || this.closed) throw new Error('Netlink socket is closed');
    const bytes = Buffer.isBuffer(message) ? message : Buffer.concat(message);
    expect(bytes.readUInt32LE(0)).toBe(bytes.length);
    this.sent.push({ type: bytes.readUInt16LE(4), flags: bytes.readUInt16LE(6), seq: bytes.readUInt32LE(8), payload: bytes.subarray(16) });
    callback?.();
  }
  ref(): void {
    this.referenced = true;
  }
  unref(): void {
    this.referenced = false;
  }
  close(): void {
    this.closed = true;
  }
  setRecvBufferSize(): void {}
}

function message(type: number, seq: number, payload: Buffer, flags = 0): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + payload.length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt16LE(flags, 6);
  header.writeUInt32LE(seq, 8);
  const padding = Buffer.alloc((4 - (payload.length % 4)) % 4);
  return Buffer.concat([header, payload, padding]);
}
function ack(seq: number, errno = 0): Buffer {
  const body = Buffer.alloc(4 + 16);
  body.writeInt32LE(-errno, 0);
  return message(NLMSG_ERROR, seq, body);
}

/** NLMSG_DONE closing a dump, with its errno. */
function done(seq: number, errno = 0, flags = NLM_F_MULTI): Buffer {
  const body = Buffer.alloc(4);
  body.writeInt32LE(-errno, 0);
  return message(NLMSG_DONE, seq, body, flags);
}

describe('RequestChannel', () => {
  let sockets: FakeSocket[];
  let socketErrors: Error[];
  /** New sockets throw on send, as every socket of a broken binding would. */
  let newSocketsThrow: boolean;
  let channel: RequestChannel;
  const socket = () => sockets.at(-1)!;

  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    sockets = [];
    socketErrors = [];
    newSocketsThrow = false;
    channel = new RequestChannel(
      5000,
      (error) => socketErrors.push(error),
      () => {
        const s = new FakeSocket();
        s.throwOnSend = newSocketsThrow;
        sockets.push(s);
        return s as unknown as RequestSocket;
      },
      15000,
    );
  });
  afterEach(() => {
    channel.close();
    vi.useRealTimers();
  });

  it('asks for an acknowledgement and resolves on it with the replies that came before it', async () => {
    const request = channel.request(RTM_GETLINK, 0, Buffer.from('abcd'), 'get link br64');
    const [sent] = socket().sent;
    expect(sent).toMatchObject({ type: RTM_GETLINK, payload: Buffer.from('abcd') });
    expect(sent!.flags & 0x5).toBe(0x5); // NLM_F_REQUEST | NLM_F_ACK
    socket().emit('message', message(RTM_NEWLINK, sent!.seq, Buffer.from('link')));
    let settled = false;
    void request.then(() => (settled = true));
    await Promise.resolve();
    expect(settled).toBe(false); // a reply alone does not complete a request
    socket().emit('message', ack(sent!.seq));
    expect((await request).map((b) => b.toString())).toEqual(['link']);
  });

  it('matches interleaved answers by sequence number, also several messages in one datagram', async () => {
    const first = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'first');
    const second = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'second');
    const [a, b] = socket().sent;
    expect(a!.seq).not.toBe(b!.seq);
    socket().emit('message', Buffer.concat([message(RTM_NEWLINK, b!.seq, Buffer.from('echo')), ack(b!.seq), ack(a!.seq, 17)]));
    expect((await second).map(String)).toEqual(['echo']);
    await expect(first).rejects.toMatchObject({ name: 'KernelError', errno: 'EEXIST', operation: 'first' });
  });

  it('ignores answers nobody waits for and stops at a malformed length', async () => {
    const request = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change');
    const { seq } = socket().sent[0]!;
    const malformed = ack(seq);
    malformed.writeUInt32LE(4, 0);
    socket().emit('message', Buffer.concat([ack(seq + 100), malformed]));
    socket().emit('message', ack(seq));
    await expect(request).resolves.toEqual([]);
  });

  it('times out a request the kernel never answers, with one timer for all', async () => {
    const early = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'early');
    vi.advanceTimersByTime(3000);
    const late = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'late');
    const earlyOutcome = early.catch((e: KernelError) => e);
    vi.advanceTimersByTime(2001);
    expect(await earlyOutcome).toMatchObject({ errno: 'ETIMEDOUT', operation: 'early: no answer from the kernel in 5000 ms' });
    socket().emit('message', ack(socket().sent[1]!.seq));
    await expect(late).resolves.toEqual([]);
    vi.advanceTimersByTime(5000); // the timer left for `late` finds nothing to expire, and stops
    expect(vi.getTimerCount()).toBe(0);
  });

  it('keeps the socket referenced only while requests wait', async () => {
    expect(socket().referenced).toBe(false);
    const request = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change');
    expect(socket().referenced).toBe(true);
    socket().emit('message', ack(socket().sent[0]!.seq));
    await request;
    expect(socket().referenced).toBe(false);
  });

  it('after a socket error fails what waits and continues on a fresh socket', async () => {
    const waiting = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change br64');
    socket().emit('error', new Error('recvmsg: No buffer space available'));
    await expect(waiting).rejects.toMatchObject({ errno: 'EIO', operation: 'change br64: netlink socket error: recvmsg: No buffer space available' });
    expect(socketErrors).toHaveLength(1);
    expect(sockets).toHaveLength(2);
    expect(sockets[0]!.closed).toBe(true);
    const next = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change br65');
    socket().emit('message', ack(socket().sent[0]!.seq));
    await expect(next).resolves.toEqual([]);
  });

  it('ignores an error from a socket it has already replaced', async () => {
    socket().emit('error', new Error('poll error'));
    const old = sockets[0]!;
    const waiting = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change br64');
    old.emit('error', new Error('late error from the old socket'));
    expect(sockets).toHaveLength(2);
    socket().emit('message', ack(socket().sent[0]!.seq));
    await expect(waiting).resolves.toEqual([]);
  });

  it('sends once more on a fresh socket when the binding closed the old one (nothing was sent)', async () => {
    socket().throwOnSend = true;
    const request = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'create br64');
    expect(sockets).toHaveLength(2);
    expect(sockets[1]!.sent).toHaveLength(1);
    socket().emit('message', ack(sockets[1]!.sent[0]!.seq));
    await expect(request).resolves.toEqual([]);
  });

  it('fails with EIO when the fresh socket refuses the send too, and waits for nothing', async () => {
    socket().throwOnSend = true;
    newSocketsThrow = true;
    await expect(channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'create br64')).rejects.toMatchObject({
      errno: 'EIO',
      operation: 'create br64: Netlink socket is closed',
    });
    expect(sockets).toHaveLength(2);
    expect(socket().referenced).toBe(false);
    expect(vi.getTimerCount()).toBe(1); // the shared timer, which finds nothing when it fires
    vi.advanceTimersByTime(5000);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('reports a failed send with its errno code', async () => {
    const s = socket();
    s.send = (_m, _o, callback) => callback?.(Object.assign(new Error('sendmsg: No buffer space available'), { code: 'ENOBUFS' }));
    await expect(channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'create br64')).rejects.toMatchObject({ errno: 'ENOBUFS', operation: expect.stringContaining('create br64') });
  });

  it('fails what waits when closed', async () => {
    const waiting = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'create br64');
    channel.close();
    await expect(waiting).rejects.toBeInstanceOf(KernelError);
    await expect(waiting).rejects.toMatchObject({ errno: 'ESHUTDOWN' });
    expect(socket().closed).toBe(true);
  });

  it("puts the kernel's extended acknowledgement into the error", async () => {
    const request = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'create vxlan vx64');
    const { seq } = socket().sent[0]!;
    const msg = Buffer.from('Unknown device type\0');
    const attr = Buffer.alloc(4 + 20);
    attr.writeUInt16LE(4 + msg.length, 0);
    attr.writeUInt16LE(1, 2); // NLMSGERR_ATTR_MSG
    msg.copy(attr, 4);
    const body = Buffer.concat([Buffer.alloc(4), Buffer.alloc(16), attr]); // errno, the capped request's header, the attribute
    body.writeInt32LE(-95, 0);
    socket().emit('message', message(NLMSG_ERROR, seq, body, 0x100 | 0x200));
    await expect(request).rejects.toMatchObject({ errno: 'EOPNOTSUPP', message: 'create vxlan vx64: EOPNOTSUPP (Unknown device type)' });
  });
});

describe('RequestChannel dumps', () => {
  let sockets: FakeSocket[];
  let channel: RequestChannel;
  const socket = () => sockets.at(-1)!;
  const part = (seq: number, text: string, flags = NLM_F_MULTI) => message(RTM_NEWLINK, seq, Buffer.from(text), flags);

  beforeEach(() => {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'performance'] });
    sockets = [];
    channel = new RequestChannel(5000, () => undefined, () => {
      const s = new FakeSocket();
      sockets.push(s);
      return s as unknown as RequestSocket;
    }, 15000);
  });
  afterEach(() => {
    channel.close();
    vi.useRealTimers();
  });

  it('asks for a dump without an acknowledgement and resolves at NLMSG_DONE with every part, across datagrams', async () => {
    const dump = channel.dump(RTM_GETLINK, Buffer.from('abcd'), 'dump links');
    await Promise.resolve();
    const [sent] = socket().sent;
    expect(sent).toMatchObject({ type: RTM_GETLINK, payload: Buffer.from('abcd') });
    expect(sent!.flags).toBe(NLM_F_DUMP | 0x1); // NLM_F_REQUEST, no NLM_F_ACK
    socket().emit('message', Buffer.concat([part(sent!.seq, 'lo'), part(sent!.seq, 'eth0')]));
    socket().emit('message', Buffer.concat([part(sent!.seq, 'br64'), done(sent!.seq)]));
    expect((await dump).parts.map(String)).toEqual(['lo', 'eth0', 'br64']);
    expect(socket().referenced).toBe(false);
  });

  it("fails with NLMSG_DONE's errno, or with an NLMSG_ERROR when the kernel refuses to start", async () => {
    const first = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    await Promise.resolve();
    socket().emit('message', Buffer.concat([part(socket().sent[0]!.seq, 'lo'), done(socket().sent[0]!.seq, 90)]));
    await expect(first).rejects.toMatchObject({ errno: 'EMSGSIZE', operation: 'dump links' });
    const second = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    await vi.waitFor(() => expect(socket().sent).toHaveLength(2));
    socket().emit('message', ack(socket().sent[1]!.seq, 22));
    await expect(second).rejects.toMatchObject({ errno: 'EINVAL' });
  });

  it('reads an interrupted dump again, and returns only the consistent one', async () => {
    const dump = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    await Promise.resolve();
    const first = socket().sent[0]!.seq;
    socket().emit('message', Buffer.concat([part(first, 'lo'), part(first, 'br64', NLM_F_MULTI | NLM_F_DUMP_INTR), done(first)]));
    await vi.waitFor(() => expect(socket().sent).toHaveLength(2));
    const second = socket().sent[1]!.seq;
    expect(second).not.toBe(first);
    socket().emit('message', Buffer.concat([part(second, 'lo'), part(second, 'br65'), done(second)]));
    expect(await dump).toMatchObject({ consistent: true });
    expect((await dump).parts.map(String)).toEqual(['lo', 'br65']);
  });

  it('after 5 interrupted dumps in a row, returns the last one, marked inconsistent', async () => {
    const dump = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    const outcome = dump;
    for (let attempt = 1; attempt <= 5; attempt++) {
      await vi.waitFor(() => expect(socket().sent).toHaveLength(attempt));
      // The flag may come on NLMSG_DONE alone.
      socket().emit('message', Buffer.concat([part(socket().sent[attempt - 1]!.seq, 'lo'), done(socket().sent[attempt - 1]!.seq, 0, NLM_F_MULTI | NLM_F_DUMP_INTR)]));
    }
    expect(await outcome).toMatchObject({ consistent: false });
    expect((await outcome).parts.map(String)).toEqual(['lo']);
    expect(socket().sent).toHaveLength(5);
  });

  it('runs one dump at a time (the kernel refuses a second on the same socket), requests meanwhile', async () => {
    const first = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    const second = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links with stats');
    await Promise.resolve();
    const request = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change br64');
    expect(socket().sent.map((s) => s.flags & NLM_F_DUMP)).toEqual([NLM_F_DUMP, 0]);
    socket().emit('message', ack(socket().sent[1]!.seq));
    await request;
    socket().emit('message', Buffer.concat([part(socket().sent[0]!.seq, 'lo'), done(socket().sent[0]!.seq)]));
    expect((await first).parts.map(String)).toEqual(['lo']);
    await vi.waitFor(() => expect(socket().sent).toHaveLength(3));
    socket().emit('message', done(socket().sent[2]!.seq));
    await expect(second).resolves.toEqual({ parts: [], consistent: true });
  });

  it("times a dump out after the dump timeout, while a request's shorter one still applies", async () => {
    const dump = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links').catch((error: KernelError) => error);
    await Promise.resolve();
    const request = channel.request(RTM_NEWLINK, 0, Buffer.alloc(4), 'change br64').catch((error: KernelError) => error);
    vi.advanceTimersByTime(5001);
    expect(await request).toMatchObject({ errno: 'ETIMEDOUT', operation: 'change br64: no answer from the kernel in 5000 ms' });
    vi.advanceTimersByTime(9000);
    socket().emit('message', part(socket().sent[0]!.seq, 'lo')); // parts keep coming, but not NLMSG_DONE
    vi.advanceTimersByTime(1000);
    expect(await dump).toMatchObject({ errno: 'ETIMEDOUT', operation: 'dump links: no answer from the kernel in 15000 ms' });
  });

  it('fails a dump whose socket fails, and dumps on the fresh socket next', async () => {
    const dump = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    await Promise.resolve();
    socket().emit('message', part(socket().sent[0]!.seq, 'lo'));
    socket().emit('error', new Error('recvmsg: No buffer space available'));
    await expect(dump).rejects.toMatchObject({ errno: 'EIO' });
    const next = channel.dump(RTM_GETLINK, Buffer.alloc(4), 'dump links');
    await vi.waitFor(() => expect(sockets[1]!.sent).toHaveLength(1));
    sockets[1]!.emit('message', Buffer.concat([part(sockets[1]!.sent[0]!.seq, 'lo'), done(sockets[1]!.sent[0]!.seq)]));
    expect((await next).parts.map(String)).toEqual(['lo']);
  });
});
