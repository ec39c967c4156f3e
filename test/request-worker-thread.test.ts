/**
 * The request thread's side (src/kernel/request-worker-thread.ts) against a fake port and fake raw
 * sockets: the socket open only while requests wait, sends and their completions batched per turn,
 * received datagrams packed into one transferred buffer, failures that never escape a handler.
 * The real thread with the real kernel is exercised by native-tests/kernel.test.ts.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { packDatagrams, type FromWorker, type ToWorker } from '../src/kernel/request-thread-protocol.js';
import { RequestThread, type AgentPort, type ThreadSocket } from '../src/kernel/request-worker-thread.js';

class FakePort extends EventEmitter {
  readonly posted: Array<{ message: FromWorker; transfer: unknown[] }> = [];
  closed = false;
  postMessage(message: FromWorker, transfer: unknown[] = []): void {
    this.posted.push({ message, transfer });
  }
  close(): void {
    this.closed = true;
  }
  deliver(message: ToWorker): void {
    this.emit('message', message);
  }
}

class FakeRawSocket extends EventEmitter {
  readonly sent: string[] = [];
  readonly completions: Array<(error?: Error) => void> = [];
  closed = false;
  receiveBufferBytes = 0;
  /** Makes send() throw, as the binding does on a closed socket. */
  throwOnSend?: Error;
  send(datagram: Uint8Array, _options: unknown, callback?: (error?: Error) => void): void {
    if (this.throwOnSend) throw this.throwOnSend;
    this.sent.push(Buffer.from(datagram).toString());
    this.completions.push(callback ?? (() => undefined));
  }
  close(): void {
    this.closed = true;
  }
  setRecvBufferSize(bytes: number): void {
    this.receiveBufferBytes = bytes;
  }
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));
const sendMessage = (firstId: number, datagrams: string[]): ToWorker => ({ send: { firstId, ...packDatagrams(datagrams.map((d) => Buffer.from(d))) } });

function setUp() {
  const port = new FakePort();
  const sockets: FakeRawSocket[] = [];
  new RequestThread(port as unknown as AgentPort, () => {
    const socket = new FakeRawSocket();
    sockets.push(socket);
    return socket as unknown as ThreadSocket;
  });
  return { port, sockets };
}

function receivedIn(message: FromWorker): string[] {
  if (!message.received) return [];
  let offset = 0;
  return message.received.lengths.map((length) => {
    const text = Buffer.from(message.received!.data.subarray(offset, offset + length)).toString();
    offset += length;
    return text;
  });
}

describe('RequestThread', () => {
  it('opens its socket at the first send, with the receive buffer asked for, and sends each datagram in order', () => {
    const { port, sockets } = setUp();
    port.deliver({ receiveBufferBytes: 1 << 25 });
    expect(sockets).toHaveLength(0);
    port.deliver(sendMessage(1, ['req-1', 'req-22']));
    expect(sockets).toHaveLength(1);
    expect(sockets[0]!.receiveBufferBytes).toBe(1 << 25);
    expect(sockets[0]!.sent).toEqual(['req-1', 'req-22']);
  });

  it("answers once per turn: sends completed up to the last, failures by id, and what was received packed in one transferred buffer", async () => {
    const { port, sockets } = setUp();
    port.deliver(sendMessage(1, ['a', 'b', 'c']));
    const [socket] = sockets as [FakeRawSocket];
    socket.completions[0]!();
    socket.completions[1]!(Object.assign(new Error('Message too long'), { code: 'EMSGSIZE' }));
    socket.completions[2]!();
    socket.emit('message', Buffer.from('ack-1'));
    socket.emit('message', Buffer.from('ack-333'));
    expect(port.posted).toEqual([]);
    await nextTurn();
    expect(port.posted).toHaveLength(1);
    const [{ message, transfer }] = port.posted as [{ message: FromWorker; transfer: unknown[] }];
    expect(message.sentUpTo).toBe(3);
    expect(message.sendErrors).toEqual([{ id: 2, code: 'EMSGSIZE', message: 'Message too long' }]);
    expect(receivedIn(message)).toEqual(['ack-1', 'ack-333']);
    expect(transfer).toEqual([message.received!.data.buffer]);
  });

  it('closes its socket when nothing waits, and opens a fresh one for the next send', () => {
    const { port, sockets } = setUp();
    port.deliver(sendMessage(1, ['a']));
    port.deliver({ idle: true });
    expect(sockets[0]!.closed).toBe(true);
    port.deliver(sendMessage(2, ['b']));
    expect(sockets).toHaveLength(2);
    expect(sockets[1]!.sent).toEqual(['b']);
  });

  it('on close: closes the socket, then sets the flag the exiting process waits for, then closes its port', () => {
    const { port, sockets } = setUp();
    port.deliver(sendMessage(1, ['a']));
    const flag = new Int32Array(new SharedArrayBuffer(4));
    port.deliver({ close: flag });
    expect(sockets[0]!.closed).toBe(true);
    expect(Atomics.load(flag, 0)).toBe(1);
    expect(port.closed).toBe(true);
  });

  it('closes a socket that reports an error (a failed receive leaves it open) and tells the agent', () => {
    const { port, sockets } = setUp();
    port.deliver(sendMessage(1, ['a']));
    sockets[0]!.emit('error', Object.assign(new Error('recvmsg: No buffer space available'), { code: 'ENOBUFS' }));
    expect(sockets[0]!.closed).toBe(true);
    expect(port.posted.map((p) => p.message)).toEqual([{ socketError: { code: 'ENOBUFS', message: 'recvmsg: No buffer space available' } }]);
  });

  it('reports a send the binding refuses synchronously as that send failing, and throws nothing', async () => {
    const { port, sockets } = setUp();
    port.deliver(sendMessage(1, ['a']));
    sockets[0]!.throwOnSend = new Error('Netlink socket is closed');
    expect(() => port.deliver(sendMessage(2, ['b']))).not.toThrow();
    await nextTurn();
    expect(port.posted.at(-1)!.message).toMatchObject({ sentUpTo: 2, sendErrors: [{ id: 2, message: 'Netlink socket is closed' }] });
  });

  it('reports a message it cannot handle as a socket error instead of throwing', () => {
    const { port } = setUp();
    expect(() => port.deliver({ send: { firstId: 1, data: new Uint8Array(1), lengths: [5] } })).not.toThrow();
    expect(port.posted.map((p) => Object.keys(p.message))).toEqual([['socketError']]);
  });
});
