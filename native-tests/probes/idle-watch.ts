/**
 * An etcd client built as the agents build theirs (src/store/client.ts defaults), holding one idle
 * watch on the endpoint given: nothing but keepalive pings flows, so if they came more often than
 * etcd's --grpc-keepalive-min-time allows, etcd would close the connection with too_many_pings and
 * grpc-js would say so on stderr ("rejected by server because of excess pings"). Prints
 * `watching` once the watch is confirmed and `disconnected` whenever the stream drops; runs until
 * it is terminated.
 */
import { createEtcdClient } from '../../src/store/client.js';

const [endpoint] = process.argv.slice(2);
if (!endpoint) throw new Error('usage: idle-watch.ts ENDPOINT');
const client = createEtcdClient({ endpoints: [endpoint] });
const watcher = await client.watch().prefix('/idle-watch/').create();
watcher.on('disconnected', () => process.stdout.write('disconnected\n'));
process.stdout.write('watching\n');
// Whatever grpc-js keeps referenced, the probe lives until its test ends it.
setInterval(() => undefined, 60_000);
