/**
 * The rtnetlink request path (src/kernel/rtnl.ts RequestChannel) against a fake raw socket:
 * replies matched by sequence number, completion by the acknowledgement, errno, timeouts, and a
 * socket that fails or closes under it. The real kernel is exercised by native-tests/kernel.test.ts.
 */
import { EventEmitter } from 'node:events';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { RTM_GETLINK, RTM_NEWLINK } from '../src/kernel/link-codec.js';
import { KernelError } from '../src/kernel/errors.js';
import { RequestChannel, type RequestSocket } from '../src/kernel/rtnl.js';

/** The kernel's acknowledgement (struct nlmsgerr), errno 0 for success. */
const NLMSG_ERROR = 2;

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

function message(type: number, seq: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + payload.length, 0);
  header.writeUInt16LE(type, 4);
  header.writeUInt32LE(seq, 8);
  const padding = Buffer.alloc((4 - (payload.length % 4)) % 4);
  return Buffer.concat([header, payload, padding]);
}
function ack(seq: number, errno = 0): Buffer {
  const body = Buffer.alloc(4 + 16);
  body.writeInt32LE(-errno, 0);
  return message(NLMSG_ERROR, seq, body);
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
    channel = new RequestChannel(5000, (error) => socketErrors.push(error), () => {
      const s = new FakeSocket();
      s.throwOnSend = newSocketsThrow;
      sockets.push(s);
      return s as unknown as RequestSocket;
    });
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
});
