/**
 * A DesiredStateSource in a process of its own, for native-tests/etcd-freezes.test.ts, which
 * freezes its etcd (argv[2]) again and again. Run with --expose-gc. One JSON line on stdout per
 * client the source builds, per 'connected' and per 'change' event (a network put is answered
 * with a ready status, as the agent would). Commands on stdin: "measure" reports the active
 * resources and the heap after a full GC, once connected; "stop" stops the source, after which
 * the process must exit by itself.
 */
import { createInterface } from 'node:readline';
import { createEtcdClient } from '../../src/store/client.js';
import { DesiredStateSource } from '../../src/store/source.js';

const endpoint = process.argv[2]!;
const report = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
const gc = globalThis.gc;
if (!gc) throw new Error('run with --expose-gc');

let clients = 0;
const startedAt = new Date().toISOString();
const source = new DesiredStateSource({
  // Short keepalive and deadlines: a freeze is noticed within about a second (etcd must permit the pings).
  etcd: { endpoints: [endpoint], keepaliveMs: 500, callTimeoutMs: 2000 },
  prefix: '/v1',
  hostname: 'probe',
  watchAttachments: true,
  liveness: () => ({ version: 'probe', pid: process.pid, startedAt, underlay: 'u0', ready: true }),
  log: { info: () => undefined, warn: () => undefined },
  leaseTtlSeconds: 2,
  backoff: { initialMs: 50, maxMs: 500 },
  createClient: (options) => {
    report({ event: 'client', count: ++clients });
    return createEtcdClient(options);
  },
});
source.on('connected', (connected) => report({ event: 'connected', connected }));
source.on('change', ({ collection, name, value }) => {
  report({ event: 'change', collection, name, put: value !== undefined });
  if (collection === 'networks' && value) {
    source.writeStatus(name, { state: 'ready', vxlan: `vxlan${name}`, bridge: `br${name}`, updatedAt: new Date().toISOString() });
  }
});
source.start();

for await (const line of createInterface({ input: process.stdin })) {
  if (line === 'measure') {
    // Measured while connected, not in the middle of a reconnect a busy machine's late ping may cause.
    while (!source.isConnected) await new Promise((resolve) => setTimeout(resolve, 50));
    // Several rounds: what one round frees can make more garbage collectable.
    for (let round = 0; round < 4; round++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    const resources: Record<string, number> = {};
    for (const type of process.getActiveResourcesInfo()) resources[type] = (resources[type] ?? 0) + 1;
    report({ event: 'measure', resources, heapUsed: process.memoryUsage().heapUsed });
  } else if (line === 'stop') {
    await source.stop();
    report({ event: 'stopped' });
    break;
  }
}
