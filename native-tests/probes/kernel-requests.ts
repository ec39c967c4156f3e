/**
 * Runs inside a host namespace for native-tests/kernel.test.ts: exercises
 * NetlinkKernel's requests against the real kernel and prints one JSON object
 * with what it saw. Device names start with `kt`; the test owns the namespace.
 */
import { RTM_GETADDR, RTM_NEWADDR, decodeAddress, encodeAddress, encodeGetAddresses } from '../../src/kernel/address-codec.js';
import { KernelError } from '../../src/kernel/errors.js';
import { AF_BRIDGE, AF_INET6, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL } from '../../src/kernel/netlink.js';
import { RTM_GETNEIGH, RTM_NEWNEIGH, decodeNeighbour, encodeGetNeighbours, encodeNeighbour } from '../../src/kernel/neighbour-codec.js';
import { IFA_F_NODAD } from '../../src/model/address.js';
import { NTF_SELF, NUD_PERMANENT } from '../../src/model/neighbour.js';
import { RTM_GETLINK, encodeGetLink } from '../../src/kernel/link-codec.js';
import { startRequestWorker, WorkerRequestSocket } from '../../src/kernel/request-worker.js';
import { NetlinkKernel, RequestChannel } from '../../src/kernel/rtnl.js';
import { once } from 'node:events';
import type { Worker } from 'node:worker_threads';

const kernel = new NetlinkKernel();
const outcome = async <T>(work: () => Promise<T>) => {
  try {
    return { ok: await work() };
  } catch (error) {
    return error instanceof KernelError ? { errno: error.errno, message: error.message } : { thrown: String(error) };
  }
};

const echoed = await kernel.createLink({ name: 'kt0', kind: 'bridge', up: false }, 'create bridge kt0');
const kt0 = await kernel.getLink('kt0');
const duplicate = await outcome(() => kernel.createLink({ name: 'kt0', kind: 'bridge', up: false }, 'create bridge kt0 again'));
const missing = await kernel.getLink('kt-missing');
const changeMissing = await outcome(() => kernel.changeLink({ name: 'kt-missing', mtu: 1400 }, 'set mtu of kt-missing'));
// A vxlan enslaved at creation: no echo is asked for, so no index.
const withMaster = await kernel.createLink(
  { name: 'kt1', kind: 'vxlan', master: echoed, mtu: 1400, up: false, vxlan: { id: 4097, group: Buffer.from('ff050000000000000000000000001001', 'hex'), link: (await kernel.getLink('u0'))!.index, ttl: 5, port: 4789, learning: true } },
  'create vxlan kt1',
);
const kt1 = await kernel.getLink('kt1');
// Many at once: more than the 32 in flight, each answered and matched to its own request.
const names = Array.from({ length: 100 }, (_, i) => `ktb${i}`);
const indexes = await Promise.all(names.map((name) => kernel.createLink({ name, kind: 'bridge', up: false }, `create bridge ${name}`)));
const dumped = new Map((await kernel.dumpLinks()).map((link) => [link.name, link.index]));
const concurrentMatch = names.every((name, i) => dumped.get(name) === indexes[i]);
await Promise.all(names.map((name, i) => kernel.changeLink({ name, mtu: 1300 + i }, `set mtu of ${name}`)));
const mtusSet = (await kernel.dumpLinks()).filter((link) => link.name.startsWith('ktb')).every((link) => link.mtu === 1300 + Number(link.name.slice(3)));
await Promise.all(names.map((name) => kernel.deleteLink(dumped.get(name)!, `delete ${name}`)));
const left = (await kernel.dumpLinks()).filter((link) => link.name.startsWith('ktb')).length;
await kernel.close();
const afterClose = await outcome(() => kernel.getLink('kt0'));

// The request socket's worker thread, seen from a channel of its own: a worker that dies (ended
// before it opened its socket: ending one with an open netlink socket can abort the process, which is
// why the worker keeps it closed while nothing waits), replaced by a fresh one; then a send the kernel
// refuses inside sendmsg().
const workers: Worker[] = [];
const socketErrors: string[] = [];
const channel = new RequestChannel(5000, (error) => socketErrors.push(error.message), () => {
  const worker = startRequestWorker();
  workers.push(worker);
  return new WorkerRequestSocket(worker);
});
const getLo = () => outcome(async () => (await channel.request(RTM_GETLINK, 0, encodeGetLink({ name: 'lo' }), 'get link lo')).length);
// The channel does not let an idle worker keep the process alive: a timer does, while we wait for it to start.
const keepAlive = setInterval(() => undefined, 1000);
await once(workers[0]!, 'online');
clearInterval(keepAlive);
await workers[0]!.terminate();
const afterWorkerDied = await getLo();
// Larger than the socket's send buffer (net.core.wmem_default): sendmsg() itself fails.
const oversized = await outcome(() => channel.request(RTM_GETLINK, 0, Buffer.alloc(4 << 20), 'get link (oversized)'));
const afterOversized = await getLo();

// The address and neighbour codecs, understood by the kernel: an address on kt0 and two all-zeros
// forwarding entries on the vxlan kt1 (one per remote VTEP, the second appended), dumped back.
const address = Buffer.from('fd000000000000000000000000000a01', 'hex');
await channel.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, encodeAddress({ family: AF_INET6, index: kt0!.index, prefixLength: 64, address, flags: IFA_F_NODAD, scope: 0 }), 'add address');
const addresses = (await channel.dump(RTM_GETADDR, encodeGetAddresses(AF_INET6), 'dump addresses')).parts.map(decodeAddress);
const addressDumped = addresses.find((a) => a.index === kt0!.index && a.address.equals(address));
const remotes = ['fd000000000000000000000000000b01', 'fd000000000000000000000000000b02'];
for (const remote of remotes) {
  const entry = { family: AF_BRIDGE, index: kt1!.index, state: NUD_PERMANENT, flags: NTF_SELF, mac: Buffer.alloc(6), destination: Buffer.from(remote, 'hex') };
  await channel.request(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_APPEND, encodeNeighbour(entry), `append flood entry ${remote}`);
}
const floodTo = (await channel.dump(RTM_GETNEIGH, encodeGetNeighbours(AF_BRIDGE), 'dump forwarding entries')).parts
  .map(decodeNeighbour)
  .filter((n) => n.index === kt1!.index && n.mac?.equals(Buffer.alloc(6)) && n.state & NUD_PERMANENT && n.flags & NTF_SELF)
  .map((n) => n.destination?.toString('hex'))
  .sort();
await channel.close();

process.stdout.write(
  `${JSON.stringify({ echoed, kt0Index: kt0?.index, duplicate, missing: missing ?? null, changeMissing, withMaster: withMaster ?? null, kt1Master: kt1?.master, concurrentMatch, mtusSet, left, afterClose, afterWorkerDied, oversized, afterOversized, workersStarted: workers.length, socketErrors, addressDumped: addressDumped && { prefixLength: addressDumped.prefixLength, nodad: (addressDumped.flags & IFA_F_NODAD) !== 0 }, floodTo })}\n`,
);
