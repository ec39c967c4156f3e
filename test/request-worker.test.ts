/**
 * The agent's side of the request socket on a worker thread (src/kernel/request-worker.ts)
 * against a fake worker: batching per event-loop turn, send completions and failures, received
 * datagrams, and a worker or socket that fails. The worker's own side, with the real kernel, is
 * exercised by native-tests/kernel.test.ts.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import { WorkerRequestSocket, type FromWorker, type RequestWorker, type ToWorker } from '../src/kernel/request-worker.js';

class FakeWorker extends EventEmitter {
  readonly posted: Array<{ message: ToWorker; transfer: unknown[] }> = [];
  referenced = true;
  postMessage(message: ToWorker, transfer: unknown[] = []): void {
    this.posted.push({ message, transfer });
    // As the worker does once its socket is closed (an exiting process waits for this flag).
    if (message.close) Atomics.store(message.close, 0, 1);
  }
  ref(): void {
    this.referenced = true;
  }
  unref(): void {
    this.referenced = false;
  }
  answer(message: FromWorker): void {
    this.emit('message', message);
  }
  /** The datagrams of every send message so far, with their ids. */
  sentDatagrams(): Array<{ id: number; bytes: string }> {
    return this.posted.flatMap(({ message }) => {
      if (!message.send) return [];
      const { firstId, data, lengths } = message.send;
      let offset = 0;
      return lengths.map((length, i) => {
        const bytes = Buffer.from(data.subarray(offset, offset + length)).toString();
        offset += length;
        return { id: firstId + i, bytes };
      });
    });
  }
}

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

function packed(datagrams: string[]): { data: Uint8Array; lengths: number[] } {
  const data = new Uint8Array(Buffer.from(datagrams.join('')));
  return { data, lengths: datagrams.map((d) => d.length) };
}

function setUp() {
  const worker = new FakeWorker();
  const socket = new WorkerRequestSocket(worker as unknown as RequestWorker);
  const errors: Error[] = [];
  const received: string[] = [];
  socket.on('error', (error) => errors.push(error));
  socket.on('message', (datagram: Buffer) => received.push(datagram.toString()));
  return { worker, socket, errors, received };
}

describe('WorkerRequestSocket', () => {
  it("sends one turn's datagrams as one message, numbered in order, their bytes transferred", async () => {
    const { worker, socket } = setUp();
    socket.send([Buffer.from('he'), Buffer.from('ad1')], {}, () => undefined);
    socket.send([Buffer.from('second')], {}, () => undefined);
    expect(worker.posted).toEqual([]); // nothing crosses before the turn ends
    await nextTurn();
    expect(worker.posted).toHaveLength(1);
    const [{ message, transfer }] = worker.posted as [{ message: ToWorker; transfer: unknown[] }];
    expect(transfer).toEqual([message.send!.data.buffer]);
    socket.send([Buffer.from('third')], {}, () => undefined);
    await nextTurn();
    expect(worker.sentDatagrams()).toEqual([
      { id: 1, bytes: 'head1' },
      { id: 2, bytes: 'second' },
      { id: 3, bytes: 'third' },
    ]);
  });

  it('completes sends up to the one the worker reports, failing those it names with their code', async () => {
    const { worker, socket } = setUp();
    const outcomes: Array<string> = [];
    for (const name of ['a', 'b', 'c']) socket.send([Buffer.from(name)], {}, (error) => outcomes.push(`${name}:${error ? `${error.code} ${error.message}` : 'sent'}`));
    await nextTurn();
    worker.answer({ sentUpTo: 2, sendErrors: [{ id: 2, code: 'EMSGSIZE', message: 'Message too long' }] });
    expect(outcomes).toEqual(['b:EMSGSIZE Message too long', 'a:sent']);
    worker.answer({ sentUpTo: 3, sendErrors: [] });
    expect(outcomes).toEqual(['b:EMSGSIZE Message too long', 'a:sent', 'c:sent']);
  });

  it('emits each received datagram with its own bytes', () => {
    const { worker, received } = setUp();
    worker.answer({ received: packed(['ack-1', 'reply-22', 'ack-333']) });
    expect(received).toEqual(['ack-1', 'reply-22', 'ack-333']);
  });

  it("reports the worker's socket error once and is closed from then on", async () => {
    const { worker, socket, errors, received } = setUp();
    worker.answer({ socketError: { code: 'ENOBUFS', message: 'recvmsg: No buffer space available' } });
    worker.answer({ received: packed(['late']) });
    worker.emit('exit', 1);
    expect(errors.map((e) => [(e as Error & { code?: string }).code, e.message])).toEqual([['ENOBUFS', 'recvmsg: No buffer space available']]);
    expect(received).toEqual([]);
    expect(() => socket.send([Buffer.from('x')], {}, () => undefined)).toThrow('closed');
    expect(worker.posted.map((p) => Object.keys(p.message))).toEqual([['close']]);
  });

  it('reports a worker that ends or throws as a socket error', () => {
    const ended = setUp();
    ended.worker.emit('exit', 1);
    expect(ended.errors.map((e) => e.message)).toEqual(['netlink worker thread exited (code 1)']);
    const crashed = setUp();
    crashed.worker.emit('error', new Error('boom'));
    expect(crashed.errors.map((e) => e.message)).toEqual(['boom']);
  });

  it('tells the worker to close its netlink socket whenever nothing waits, and lets the process exit meanwhile', async () => {
    const { worker, socket } = setUp();
    socket.ref();
    expect(worker.referenced).toBe(true);
    socket.send([Buffer.from('request')], {}, () => undefined);
    await nextTurn();
    socket.unref();
    expect(worker.referenced).toBe(false);
    expect(worker.posted.map((p) => Object.keys(p.message))).toEqual([['send'], ['idle']]);
  });

  it('closes quietly: the worker closes its socket and ends, and the process waits for that, not for what was queued', async () => {
    const { worker, socket, errors } = setUp();
    socket.unref();
    socket.send([Buffer.from('queued')], {}, () => undefined);
    let closed = false;
    const closing = socket.close().then(() => (closed = true));
    await nextTurn();
    expect(worker.posted.map((p) => Object.keys(p.message))).toEqual([['idle'], ['close']]);
    expect(worker.referenced).toBe(true); // until the thread has ended
    expect(closed).toBe(false);
    worker.emit('exit', 0);
    await closing;
    expect(errors).toEqual([]);
    await socket.close(); // again: already ended
  });

  it('passes the receive buffer size on to the worker', () => {
    const { worker, socket } = setUp();
    socket.setRecvBufferSize(1 << 25);
    expect(worker.posted.map((p) => p.message)).toEqual([{ receiveBufferBytes: 1 << 25 }]);
  });
});
