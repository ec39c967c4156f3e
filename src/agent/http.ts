/** /healthz, /readyz and /metrics on --metrics-listen. */
import { createServer, type Server } from 'node:http';

export interface HttpHandlers {
  ready(): { ready: boolean; why?: string };
  metrics(): Promise<{ status: number; contentType: string; body: string }>;
  /** Connections from these addresses are closed at once (a router's tenants: see DESIGN.md §8). */
  refuseClient?(remoteAddress: string): boolean;
}

/** Parses `[::]:9730`, `127.0.0.1:9730` or `:9730`. */
export function parseListen(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) throw new Error(`--metrics-listen must look like [::]:9730 or 127.0.0.1:9730, got ${JSON.stringify(text)}`);
  return { host: match[1] ?? (match[2] || '::'), port };
}

/**
 * The server faces whatever network --metrics-listen is on: slow or idle clients are cut off and
 * connections are capped, so that no client can hold the agent's sockets or memory.
 */
export const HTTP_LIMITS = {
  maxConnections: 32,
  /** A request's headers must arrive within this. */
  headersTimeoutMs: 5_000,
  /** A whole request (GET, no body) within this. */
  requestTimeoutMs: 10_000,
  /** An idle keep-alive connection is closed after this. */
  keepAliveTimeoutMs: 5_000,
};

export function startHttpServer(listen: string, handlers: HttpHandlers, limits = HTTP_LIMITS): Promise<Server> {
  const { host, port } = parseListen(listen);
  // Node checks the header and request timeouts only every connectionsCheckingInterval (30 s by default).
  const server = createServer({ connectionsCheckingInterval: Math.min(1000, limits.headersTimeoutMs) }, (req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const send = (status: number, body: string, contentType = 'text/plain; charset=utf-8') => {
      res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store' });
      res.end(body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'method not allowed\n');
    if (path === '/healthz') return send(200, 'ok\n');
    if (path === '/readyz') {
      const { ready, why } = handlers.ready();
      return send(ready ? 200 : 503, ready ? 'ready\n' : `not ready: ${why}\n`);
    }
    if (path === '/metrics') {
      handlers.metrics().then(
        (result) => send(result.status, result.body, result.contentType),
        (error: Error) => send(503, `metrics unavailable: ${error.message}\n`),
      );
      return;
    }
    send(404, 'not found: try /metrics, /healthz or /readyz\n');
  });
  server.on('connection', (socket) => {
    if (socket.remoteAddress !== undefined && handlers.refuseClient?.(socket.remoteAddress)) socket.destroy();
  });
  server.maxConnections = limits.maxConnections;
  server.headersTimeout = limits.headersTimeoutMs;
  server.requestTimeout = limits.requestTimeoutMs;
  server.keepAliveTimeout = limits.keepAliveTimeoutMs;
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, ipv6Only: false }, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
