/**
 * Issue 17, item 3: values of any size etcd allows. A few values of ~1.4 MB (etcd takes up to
 * 1.5 MiB) under /v1/networks/ and under a host's attachments make each directory larger than
 * grpc-js's default 4 MiB reply: every list is paged, so agents list, become ready and apply
 * changes beside them, report each big value as its own network's error, and vxnetctl lists,
 * gets, deletes and reports status. Real etcd, real agents, real vxnetctl.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle, type VmHandle } from './harness/datacentre.js';
import { pairConverged, managedLinks, readStatus } from './harness/observe.js';
import { runVxnetctl } from './harness/vxnetctl.js';

const MTU = 1430;
const BIG_BYTES = 1_400_000;
/** Four of them make a directory of 5.6 MB, over grpc-js's default 4 MiB reply. */
const BIG_SPECS = ['b1', 'b2', 'b3', 'b4'];
const BIG_ATTACHMENTS = ['c1', 'c2', 'c3', 'c4'];

/** A JSON object of ~1.4 MB: valid JSON, refused for its size alone. */
const bigObject = (field: string) => JSON.stringify({ [field]: 'x'.repeat(BIG_BYTES) });

describe('values of any size etcd allows', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  const agents = new Map<string, AgentHandle>();
  let vm1: VmHandle;
  let vm2: VmHandle;

  /** h1 is a hypervisor (attached scope: its big attachments matter), h2 a router (all scope: the big specs matter). */
  const startAgents = async () => {
    agents.set('h1', await dc.startAgent('h1', ['--scope', 'attached']));
    agents.set('h2', await dc.startAgent('h2'));
    await Promise.all([...agents.values()].map((agent) => agent.waitReady()));
  };
  const converged = async (host: string, hex: string) => pairConverged(await managedLinks(dc, dc.host(host).ns), hex, MTU);
  const vxnetctl = (...args: string[]) => runVxnetctl(dc, args);

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    etcd = await dc.etcd();
    for (const hex of ['a1', ...BIG_ATTACHMENTS]) await etcd.put(`/v1/networks/${hex}`).value('{}');
    await etcd.put('/v1/hosts/h1/networks/a1').value('{}');
    await startAgents();
    vm1 = await dc.addVm('h1', 'bra1', 'vm1', '2001:db8:a1::1');
    vm2 = await dc.addVm('h2', 'bra1', 'vm2', '2001:db8:a1::2');
    // Each value alone fits the test's client (4 MiB); together they do not.
    for (const hex of BIG_SPECS) await etcd.put(`/v1/networks/${hex}`).value(bigObject('description'));
    for (const hex of BIG_ATTACHMENTS) await etcd.put(`/v1/hosts/h1/networks/${hex}`).value(bigObject('vm'));
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('running agents list again after a watch break beside them, and apply what changed meanwhile', async () => {
    await dc.restartEtcd();
    etcd = await dc.etcd();
    await etcd.put('/v1/networks/a2').value('{}');
    await etcd.put('/v1/hosts/h1/networks/a2').value('{}');
    await waitFor(async () => (await converged('h1', 'a2')) && (await converged('h2', 'a2')), 'a2 on both hosts after the watch break', 30_000);
    expect(agents.get('h1')!.logs().some((line) => /etcd (watch broken|unavailable)/.test(String(line.msg)))).toBe(true);
  });

  it('a restarted agent becomes ready, realises the normal networks and reports each big value as its network\'s error', async () => {
    for (const agent of agents.values()) expect((await agent.stop()).code).toBe(0);
    agents.clear();
    await startAgents();
    expect(await dc.ping(vm1, vm2.address, { count: 2, timeoutS: 3 })).toBe(true);
    for (const hex of ['a1', 'a2']) expect(await converged('h1', hex)).toBe(true);

    for (const hex of BIG_SPECS) {
      const status = await waitFor(() => readStatus(etcd, 'h2', hex), `h2's status of ${hex}`);
      expect(status).toMatchObject({ state: 'error', reason: expect.stringMatching(/spec is 14000\d\d bytes, the limit is 65536/) });
    }
    for (const hex of BIG_ATTACHMENTS) {
      const status = await waitFor(() => readStatus(etcd, 'h1', hex), `h1's status of ${hex}`);
      expect(status).toMatchObject({ state: 'error', reason: expect.stringMatching(/attachment is 14000\d\d bytes, the limit is 65536/) });
      // The router in all scope realises them: their specs are fine.
      expect(await converged('h2', hex)).toBe(true);
    }
    expect(await readStatus(etcd, 'h1', 'a1')).toMatchObject({ state: 'ready' });
  });

  it('vxnetctl lists, gets and deletes beside them, and shows each big one as invalid with a reason', async () => {
    const list = await vxnetctl('network', 'list', '--json');
    expect(list.code, list.stderr).toBe(0);
    expect((JSON.parse(list.stdout) as Array<{ vni: string }>).map((network) => network.vni)).toEqual(['a1', 'a2', ...BIG_ATTACHMENTS]);
    for (const hex of BIG_SPECS) {
      expect(list.stderr).toContain(`vxnetctl: warning: ignoring /v1/networks/${hex}: spec is 14000`);
    }
    // A warning is a line, not a copy of the value.
    expect(list.stderr.length).toBeLessThan(2_000);

    const normal = await vxnetctl('network', 'get', 'a1', '--json');
    expect(normal.code, normal.stderr).toBe(0);
    expect(JSON.parse(normal.stdout)).toMatchObject({ vni: 'a1' });
    const big = await vxnetctl('network', 'get', 'b1');
    expect(big.code).toBe(1);
    expect(big.stderr).toMatch(/^vxnetctl: network b1 has an invalid spec: spec is 14000\d\d bytes, the limit is 65536; fix or delete key \/v1\/networks\/b1\n$/);

    const deleted = await vxnetctl('network', 'delete', 'b4');
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(await etcd.get('/v1/networks/b4').string()).toBeNull();

    const status = await vxnetctl('status', '--json');
    expect(status.code, status.stderr).toBe(0);
    const hosts = JSON.parse(status.stdout) as Array<{ host: string; networks: Array<{ vni: string; attached: boolean; status: { state: string } | null }> }>;
    expect(hosts.map((host) => host.host)).toEqual(['h1', 'h2']);
    expect(hosts[0]!.networks.find((network) => network.vni === 'a1')).toMatchObject({ attached: true, status: { state: 'ready' } });
    expect(hosts[0]!.networks.find((network) => network.vni === 'c1')).toMatchObject({ status: { state: 'error' } });
    for (const hex of BIG_ATTACHMENTS) {
      expect(status.stderr).toContain(`vxnetctl: warning: ignoring /v1/hosts/h1/networks/${hex}: attachment is 14000`);
    }
    expect(status.stderr.length).toBeLessThan(2_000);
  });
});
