/**
 * What crosses between the agent's thread (request-worker.ts) and the request
 * thread (request-worker-thread.ts): datagrams in batches, one message per
 * event-loop turn each way, packed into one transferred buffer (a Buffer from
 * Node's pool would clone its whole 8 KiB slab). Both sides pack and unpack
 * with the two functions below.
 */

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
  sendErrors?: Array<{ id: number } & ErrorDetail>;
  socketError?: ErrorDetail;
}

export interface ErrorDetail {
  code?: string;
  message: string;
}

/** Datagrams packed into one buffer that can be transferred, and their lengths. */
export interface PackedDatagrams {
  data: Uint8Array;
  lengths: number[];
}

/** Marks the worker's workerData, so that the module starts the thread only inside its own worker. */
export const REQUEST_THREAD = 'vxnetd-request-thread';

export function packDatagrams(datagrams: Uint8Array[]): PackedDatagrams {
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
export function forEachDatagram(packed: PackedDatagrams, visit: (datagram: Buffer, index: number) => boolean | void): void {
  let offset = 0;
  for (let i = 0; i < packed.lengths.length; i++) {
    const length = packed.lengths[i]!;
    if (visit(Buffer.from(packed.data.buffer, packed.data.byteOffset + offset, length), i) === false) return;
    offset += length;
  }
}
