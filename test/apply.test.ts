import { describe, expect, it } from 'vitest';
import { applyPlan } from '../src/agent/apply.js';
import { IFF_UP, IN6_ADDR_GEN_MODE_NONE } from '../src/model/link.js';
import { KernelError } from '../src/kernel/errors.js';
import { planNetwork } from '../src/plan/plan.js';
import { FakeKernel } from './support/fake-kernel.js';
import { aliasOf, desired, ownership } from './support/fixtures.js';

const silent = { info: () => undefined, warn: () => undefined };
const plan = () => planNetwork('ff01', desired(0xff01), { strays: [] }, ownership(0xff01)).ops;

describe('applyPlan', () => {
  it('builds the pair: bridge mtu set after creation, vxlan created with master and mtu, aliases on both, no IPv6 link-local on either', async () => {
    const kernel = new FakeKernel();
    await applyPlan(kernel, plan(), silent);
    const br = kernel.byName('brff01')!;
    const vx = kernel.byName('vxlanff01')!;
    expect(br).toMatchObject({ kind: 'bridge', mtu: 1430, alias: aliasOf(0xff01), flags: IFF_UP, addrGenMode: IN6_ADDR_GEN_MODE_NONE });
    expect(vx).toMatchObject({ kind: 'vxlan', mtu: 1430, alias: aliasOf(0xff01), master: br.index, flags: IFF_UP, addrGenMode: IN6_ADDR_GEN_MODE_NONE });
    expect(br.linkLocal).toBeUndefined();
    expect(vx.linkLocal).toBeUndefined();
    expect(vx.vxlan).toMatchObject({ id: 0xff01, ttl: 5, port: 4789, link: 2, learning: true });
    expect(br.bridge).toEqual({ multicastSnooping: false });
    expect(kernel.mutatingRequests()).toEqual([
      'create bridge brff01 (mtu 1430, multicast snooping off)',
      'create bridge brff01 (mtu 1430, multicast snooping off): set mtu and alias, no IPv6 link-local',
      'create bridge brff01 (mtu 1430, multicast snooping off): up',
      'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01): set alias, no IPv6 link-local',
      'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01): up',
    ]);
  });

  it('without IPv6 (a kernel without it, or an MTU below 1280) each device is created up and takes two requests', async () => {
    for (const [kernel, mtu] of [[Object.assign(new FakeKernel(), { ipv6: false }), undefined], [new FakeKernel(), 1200]] as const) {
      const want = desired(0xff01, mtu, { ipv6: kernel.ipv6 });
      await applyPlan(kernel, planNetwork('ff01', want, { strays: [] }, ownership(0xff01)).ops, silent);
      expect(kernel.byName('brff01')).toMatchObject({ flags: IFF_UP, alias: aliasOf(0xff01) });
      expect(kernel.byName('vxlanff01')).toMatchObject({ flags: IFF_UP, alias: aliasOf(0xff01) });
      expect(kernel.mutatingRequests()).toHaveLength(4);
    }
  });

  it('a device brought back up and given mode none in one repair is given the mode first: no link-local appears', async () => {
    const kernel = new FakeKernel();
    await applyPlan(kernel, plan(), silent);
    // By hand: down, back to the kernel's default mode.
    await kernel.changeLink({ name: 'brff01', up: false, addrGenMode: 0 }, 'vandal');
    const ops = planNetwork('ff01', desired(0xff01), { bridge: kernel.byName('brff01'), vxlan: kernel.byName('vxlanff01'), strays: [] }, ownership(0xff01)).ops;
    expect(ops).toEqual([{ op: 'updateLink', hex: 'ff01', name: 'brff01', changes: { up: true, addrGenMode: IN6_ADDR_GEN_MODE_NONE } }]);
    kernel.requests.length = 0;
    await applyPlan(kernel, ops, silent);
    expect(kernel.byName('brff01')).toMatchObject({ flags: IFF_UP, addrGenMode: IN6_ADDR_GEN_MODE_NONE });
    expect(kernel.byName('brff01')!.linkLocal).toBeUndefined();
    expect(kernel.mutatingRequests()).toEqual(['update brff01: up, no IPv6 link-local (addrgenmode none)', 'update brff01: up, no IPv6 link-local (addrgenmode none): up']);
  });

  it('a failed vxlan create undoes the bridge it created: nothing half-built', async () => {
    const kernel = new FakeKernel();
    kernel.failNext('create', 'ENOBUFS', 'create vxlan');
    await expect(applyPlan(kernel, plan(), silent)).rejects.toThrow(KernelError);
    expect(kernel.links.size).toBe(0);
  });

  it('a failure after the vxlan exists undoes both devices', async () => {
    const kernel = new FakeKernel();
    kernel.failNext('change', 'EINVAL', 'set alias');
    await expect(applyPlan(kernel, plan(), silent)).rejects.toThrow(/set alias, no IPv6 link-local: EINVAL/);
    expect(kernel.links.size).toBe(0);
  });

  it('a failure to bring the vxlan up, the last step, undoes both devices', async () => {
    const kernel = new FakeKernel();
    kernel.failNext('change', 'ENOMEM', 'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01): up');
    await expect(applyPlan(kernel, plan(), silent)).rejects.toThrow(/master brff01\): up: ENOMEM/);
    expect(kernel.links.size).toBe(0);
  });

  it('does not delete devices that existed before the failed apply', async () => {
    const kernel = new FakeKernel();
    await applyPlan(kernel, plan(), silent);
    kernel.byName('vxlanff01')!.mtu = 1300;
    const ops = planNetwork('ff01', desired(0xff01), { bridge: kernel.byName('brff01'), vxlan: kernel.byName('vxlanff01'), strays: [] }, ownership(0xff01)).ops;
    kernel.failNext('change', 'EINVAL');
    await expect(applyPlan(kernel, ops, silent)).rejects.toThrow(KernelError);
    expect(kernel.byName('brff01')).toBeDefined();
    expect(kernel.byName('vxlanff01')).toBeDefined();
  });
});
