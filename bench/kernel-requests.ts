/**
 * vxnetd's kernel requests alone, for converge.ts (--kernel-only): the
 * agent's own planner and apply code (planNetwork, applyPlan, NetlinkKernel)
 * create N networks from empty, as many at a time as the agent's queue, with
 * no etcd, Node HTTP server, logging or status writes. The difference
 * between this and the agent's time is what the agent adds around the
 * kernel work. Run inside a host namespace with an underlay u0; prints one
 * JSON line: { ms, userS, systemS } measured from the first request to the
 * last reply, so Node's start-up is left out.
 *
 *   ip netns exec NS npx tsx bench/kernel-requests.ts HOST FIRST_VNI COUNT
 */
import { NETWORKS_IN_FLIGHT } from '../src/agent/agent.js';
import { applyPlan } from '../src/agent/apply.js';
import { NetlinkKernel } from '../src/kernel/rtnl.js';
import { parseGroupBase } from '../src/model/group.js';
import { desiredNetwork } from '../src/model/network.js';
import { vniHex } from '../src/model/vni.js';
import { underlayOf } from '../src/plan/actual.js';
import { ownershipOf, planNetwork } from '../src/plan/plan.js';
import { identityText } from '../src/model/identity.js';

const [hostname, firstText, countText] = process.argv.slice(2);
const first = Number(firstText);
const count = Number(countText);
if (!hostname || !Number.isInteger(first) || !Number.isInteger(count)) {
  process.stderr.write('usage: kernel-requests.ts HOST FIRST_VNI COUNT\n');
  process.exit(2);
}

const kernel = new NetlinkKernel();
const u0 = await kernel.getLink('u0');
if (!u0) throw new Error('no underlay u0 in this namespace');
const host = { hostname, groupBase: parseGroupBase('ff05::'), ttl: 5, dstport: 4789 };
const underlay = underlayOf(u0);
const quiet = { info: () => undefined, warn: (fields: Record<string, unknown>, msg: string) => process.stderr.write(`${msg} ${JSON.stringify(fields)}\n`) };

const identity = identityText({ host: hostname!, etcdCluster: '0000000000000000', prefix: '/v1' });

async function createNetwork(vni: number): Promise<void> {
  const desired = desiredNetwork(vni, { type: 'vxlan' }, host, underlay, { identity, incarnation: 1 });
  const plan = planNetwork(vniHex(vni), desired, { strays: [] }, ownershipOf(hostname!, vni, identity));
  await applyPlan(kernel, plan.ops, quiet);
}

const started = performance.now();
const cpuBefore = process.cpuUsage();
let next = first;
await Promise.all(
  Array.from({ length: NETWORKS_IN_FLIGHT }, async () => {
    while (next < first + count) await createNetwork(next++);
  }),
);
const cpu = process.cpuUsage(cpuBefore);
process.stdout.write(`${JSON.stringify({ ms: performance.now() - started, userS: cpu.user / 1e6, systemS: cpu.system / 1e6 })}\n`);
await kernel.close();
