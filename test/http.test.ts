/** The HTTP server faces the network: slow and idle clients are cut off, connections are capped. */
import { connect, type Socket } from 'node:net';
import type { Server } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { startHttpServer } from '../src/agent/http.js';

const handlers = {
  ready: () => ({ ready: true }),
  metrics: async () => ({ status: 200, contentType: 'text/plain', body: 'm 1\n' }),
};

let server: Server | undefined;
const sockets: Socket[] = [];

afterEach(async () => {
  for (const socket of sockets.splice(0)) socket.destroy();
  server?.closeAllConnections();
  await new Promise((resolve) => server?.close(resolve) ?? resolve(undefined));
  server = undefined;
});

function portOf(s: Server): number {
  return (s.address() as { port: number }).port;
}

/** Opens a connection and resolves with how it ended: 'closed' by the server, or still 'open' after `waitMs`. */
function openConnection(port: number, send: string, waitMs: number): Promise<{ ended: 'closed' | 'open'; data: string }> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    sockets.push(socket);
    let data = '';
    const timer = setTimeout(() => resolve({ ended: 'open', data }), waitMs);
    socket.on('data', (chunk) => (data += chunk.toString()));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      clearTimeout(timer);
      resolve({ ended: 'closed', data });
    });
    socket.on('connect', () => socket.write(send));
  });
}

describe('HTTP server limits', () => {
  it('a client that never finishes its headers is cut off', async () => {
    server = await startHttpServer('127.0.0.1:0', handlers, { maxConnections: 8, headersTimeoutMs: 200, requestTimeoutMs: 300, keepAliveTimeoutMs: 200 });
    const slow = await openConnection(portOf(server), 'GET /metrics HTTP/1.1\r\nHost: x\r\n', 3000);
    expect(slow.ended).toBe('closed');
  });

  it('an idle keep-alive connection is closed after its timeout', async () => {
    server = await startHttpServer('127.0.0.1:0', handlers, { maxConnections: 8, headersTimeoutMs: 1000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 100 });
    const idle = await openConnection(portOf(server), 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 3000);
    expect(idle.data).toMatch(/^HTTP\/1.1 200/);
    expect(idle.ended).toBe('closed');
  });

  it('connections beyond the cap are refused; the ones within it are served', async () => {
    server = await startHttpServer('127.0.0.1:0', handlers, { maxConnections: 3, headersTimeoutMs: 2000, requestTimeoutMs: 3000, keepAliveTimeoutMs: 2000 });
    const port = portOf(server);
    // Three connections hold their slots with unfinished headers.
    const held = [0, 1, 2].map(() => openConnection(port, 'GET /healthz HTTP/1.1\r\n', 500));
    await new Promise((resolve) => setTimeout(resolve, 100));
    const refused = await openConnection(port, 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n', 500);
    expect(refused.ended).toBe('closed');
    expect(refused.data).toBe('');
    expect((await Promise.all(held)).map((h) => h.ended)).toEqual(['open', 'open', 'open']);
  });
});
