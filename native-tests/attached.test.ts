/**
 * Issue 5: one hypervisor in `attached` scope and one router in `all` scope
 * against the same etcd, driven by the real vxnetctl.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor } from './harness/datacentre.js';
import { readStatus } from './harness/observe.js';
import { runVxnetctl } from './harness/vxnetctl.js';


describe('attached scope next to all scope', () => {
  let dc: DataCentre;
  let etcd: Etcd3;

  const vxnetctl = (...args: string[]) => runVxnetctl(dc, args);
  const has = async (host: string, device: string) => (await dc.link(dc.host(host).ns, device)) !== undefined;
  const status = (host: string, hex: string) => readStatus(etcd, host, hex);

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['hv1', 'router'] });
    etcd = await dc.etcd();
    for (const vni of ['64', 'ff01']) expect((await vxnetctl('network', 'create', '--vni', vni)).code).toBe(0);
    const hv1 = await dc.startAgent('hv1', ['--scope', 'attached']);
    const router = await dc.startAgent('router', ['--scope', 'all']);
    await hv1.waitReady();
    await router.waitReady();
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('the router realises every network; the hypervisor none until attached', async () => {
    await waitFor(async () => (await has('router', 'vxlan64')) && (await has('router', 'vxlanff01')), 'all networks on the router');
    expect(await has('hv1', 'br64')).toBe(false);
    expect(await has('hv1', 'brff01')).toBe(false);
  });

  it('host attach creates the network on that host only, and a VM there reaches the router side', async () => {
    const attach = await vxnetctl('host', 'attach', 'hv1', '64');
    expect(attach.code, attach.stderr).toBe(0);
    await waitFor(async () => (await has('hv1', 'vxlan64')) && (await has('hv1', 'br64')), 'vxlan64 on hv1');
    expect(await has('hv1', 'vxlanff01')).toBe(false);
    expect((await status('hv1', '64'))?.state).toBe('ready');
    const vm = await dc.addVm('hv1', 'br64', 'vm1', '2001:db8:64::1');
    const peer = await dc.addVm('router', 'br64', 'vm2', '2001:db8:64::2');
    expect(await dc.ping(vm, peer.address, { count: 3, timeoutS: 3 })).toBe(true);
  });

  it('host detach removes the network from that host, and only there', async () => {
    expect((await vxnetctl('host', 'attach', 'hv1', 'ff01')).code).toBe(0);
    await waitFor(() => has('hv1', 'vxlanff01'), 'vxlanff01 on hv1');
    expect((await vxnetctl('host', 'detach', 'hv1', 'ff01')).code).toBe(0);
    await waitFor(async () => !(await has('hv1', 'vxlanff01')) && !(await has('hv1', 'brff01')), 'ff01 gone from hv1');
    await waitFor(async () => (await status('hv1', 'ff01')) === undefined, 'status of ff01 removed on hv1');
    expect(await has('router', 'vxlanff01')).toBe(true);
    expect(await has('hv1', 'vxlan64')).toBe(true);
  });

  it('a network deleted while attached (--force) is removed from the attached host too, its attachment with it', async () => {
    const refused = await vxnetctl('network', 'delete', '64');
    expect(refused.code).toBe(5);
    expect(refused.stderr).toMatch(/hosts hv1 are still attached to network 64/);
    expect((await vxnetctl('network', 'delete', '64', '--force')).code).toBe(0);
    for (const host of ['hv1', 'router']) {
      await waitFor(async () => !(await has(host, 'vxlan64')) && !(await has(host, 'br64')), `64 gone from ${host}`);
    }
    expect(await etcd.get('/v1/hosts/hv1/networks/64').string()).toBeNull();
  });

  it('an attachment to a network that does not exist is reported in status, not retried in a loop', async () => {
    // vxnetctl refuses to attach unknown networks, so a scheduler writing the key directly is simulated.
    await etcd.put('/v1/hosts/hv1/networks/abc').value('{}');
    const reported = await waitFor(async () => {
      const s = await status('hv1', 'abc');
      return s?.state === 'error' ? s : undefined;
    }, 'status for the dangling attachment');
    expect(reported.reason).toMatch(/network abc does not exist/);
    expect(await has('hv1', 'vxlanabc')).toBe(false);
    // Creating the network then makes the attachment good.
    expect((await vxnetctl('network', 'create', '--vni', 'abc')).code).toBe(0);
    await waitFor(async () => (await status('hv1', 'abc'))?.state === 'ready', 'abc ready on hv1');
    expect(await has('hv1', 'vxlanabc')).toBe(true);
  });

  it('vxnetctl status shows both hosts', async () => {
    const result = await vxnetctl('status', '--json');
    expect(result.code, result.stderr).toBe(0);
    const hosts = JSON.parse(result.stdout) as Array<{ host: string; agent: { ready: boolean } | null }>;
    expect(hosts.map((h) => h.host).sort()).toEqual(['hv1', 'router']);
    expect(hosts.every((h) => h.agent?.ready)).toBe(true);
  });
});
