/**
 * Issue 2 end to end: networks in etcd become vxlan + bridge on two hosts
 * (real vxnetd, real etcd, real kernel), and VMs talk across the overlay.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deterministicMac, formatMac } from '../src/model/mac.js';
import { DataCentre, waitFor, type AgentHandle, type VmHandle } from './harness/datacentre.js';
import { readStatus } from './harness/observe.js';

describe('vxnetd on two hosts', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  const agents: AgentHandle[] = [];
  const vms: Record<string, VmHandle> = {};

  const putNetwork = (hex: string, spec: object) => etcd.put(`/v1/networks/${hex}`).value(JSON.stringify(spec));
  const status = (host: string, hex: string) => readStatus(etcd, host, hex);
  const waitStatus = (host: string, hex: string, pred: (s: any) => boolean, what: string) =>
    waitFor(async () => {
      const s = await status(host, hex);
      return s && pred(s) ? s : undefined;
    }, `${what} on ${host}`);

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    etcd = await dc.etcd();
    await putNetwork('64', {});
    await putNetwork('ff01', { mtu: 1400, owner: 'customer-42' });
    await putNetwork('3400', {});
    for (const host of ['h1', 'h2']) agents.push(await dc.startAgent(host));
    for (const agent of agents) await agent.waitReady();
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('creates both devices per network on every host, with exactly the contract attributes', async () => {
    for (const host of ['h1', 'h2']) {
      const ns = dc.host(host).ns;
      for (const [hex, vni, group, mtu] of [
        ['64', 100, 'ff05::64', 1430],
        ['ff01', 0xff01, 'ff05::ff01', 1400],
        ['3400', 0x3400, 'ff05::3400', 1430],
      ] as const) {
        const vxlan = await dc.link(ns, `vxlan${hex}`);
        const bridge = await dc.link(ns, `br${hex}`);
        expect(vxlan, `vxlan${hex} on ${host}`).toBeDefined();
        expect(bridge, `br${hex} on ${host}`).toBeDefined();
        expect(vxlan.linkinfo.info_kind).toBe('vxlan');
        expect(vxlan.linkinfo.info_data).toMatchObject({ id: vni, group6: group, link: 'u0', port: 4789, ttl: 5, learning: true });
        expect(vxlan.master).toBe(`br${hex}`);
        expect(vxlan.mtu).toBe(mtu);
        expect(vxlan.flags).toEqual(expect.arrayContaining(['UP', 'LOWER_UP']));
        expect(vxlan.ifalias).toMatch(new RegExp(`^vxnetd:${hex} host=${host} etcd=[0-9a-f]{16} prefix=/v1 net=[0-9]+$`));
        expect(vxlan.address).toBe(formatMac(deterministicMac(host, 'vxlan', vni)));
        expect(bridge.linkinfo.info_kind).toBe('bridge');
        expect(bridge.mtu).toBe(mtu);
        expect(bridge.flags).toContain('UP');
        expect(bridge.ifalias).toBe(vxlan.ifalias);
        expect(bridge.address).toBe(formatMac(deterministicMac(host, 'bridge', vni)));
        // No IPv6 link-local: the host sends no DAD, MLD or router solicitation into the tenant segment.
        expect(vxlan.inet6_addr_gen_mode).toBe('none');
        expect(bridge.inet6_addr_gen_mode).toBe('none');
        // No multicast snooping: the bridge joins no all-snoopers group, so the host sends no IGMP/MLD reports into the segment.
        expect(bridge.linkinfo.info_data.mcast_snooping).toBe(0);
        const memberships = await dc.exec(ns, ['ip', 'maddr', 'show', 'dev', `br${hex}`]);
        expect(memberships.code).toBe(0);
        expect(memberships.stdout, `multicast memberships of br${hex} on ${host}`).toContain('ff02::1');
        expect(memberships.stdout).not.toMatch(/224\.0\.0\.106|ff02::6a/);
        const addresses = await dc.exec(ns, ['ip', '-j', 'addr', 'show', 'dev', `br${hex}`]);
        expect(addresses.code).toBe(0);
        expect(JSON.parse(addresses.stdout)[0].addr_info, `addresses of br${hex} on ${host}`).toEqual([]);
        // Statuses are written to etcd after the reconcile that makes them, so shortly after readiness.
        const s = await waitStatus(host, hex, (written) => written.state === 'ready', `status of ${hex}`);
        expect(s).toMatchObject({ state: 'ready', vxlan: `vxlan${hex}`, bridge: `br${hex}`, mtu });
        expect(typeof s.specRevision).toBe('number');
      }
      const agentKey = JSON.parse((await etcd.get(`/v1/hosts/${host}/agent`).string())!);
      expect(agentKey).toMatchObject({ underlay: 'u0', underlayAddress: dc.host(host).underlayAddress, ready: true });
    }
  });

  it('VMs on different hosts ping each other over the overlay, full MTU without fragmentation', async () => {
    vms.a = await dc.addVm('h1', 'br64', 'vma', '2001:db8:64::1');
    vms.b = await dc.addVm('h2', 'br64', 'vmb', '2001:db8:64::2');
    expect(await dc.ping(vms.a, '2001:db8:64::2', { count: 3, timeoutS: 3 })).toBe(true);
    expect(await dc.ping(vms.b, '2001:db8:64::1', { count: 1 })).toBe(true);
    // 1430-byte IPv6 packet = 1382 bytes of ICMPv6 payload + 48 bytes of headers.
    expect(await dc.ping(vms.a, '2001:db8:64::2', { size: 1382, dontFragment: true })).toBe(true);
    // One byte more does not fit the overlay: proves the MTU is real, not just large.
    expect(await dc.ping(vms.a, '2001:db8:64::2', { size: 1383, dontFragment: true, timeoutS: 1 })).toBe(false);
  });

  it('VMs on different networks cannot reach each other', async () => {
    vms.c = await dc.addVm('h2', 'br3400', 'vmc', '2001:db8:64::3');
    expect(await dc.ping(vms.a, '2001:db8:64::3', { count: 2, timeoutS: 1 })).toBe(false);
    vms.d = await dc.addVm('h1', 'br3400', 'vmd', '2001:db8:64::4');
    expect(await dc.ping(vms.d, '2001:db8:64::3', { count: 2, timeoutS: 3 })).toBe(true);
  });

  it('an MTU change is applied in place: same ifindex, VMs stay attached', async () => {
    const ns = dc.host('h1').ns;
    const before = { vxlan: await dc.link(ns, 'vxlan64'), bridge: await dc.link(ns, 'br64') };
    await putNetwork('64', { mtu: 1300 });
    await waitFor(async () => (await dc.link(ns, 'vxlan64'))?.mtu === 1300 && (await dc.link(ns, 'br64'))?.mtu === 1300, 'mtu 1300 on h1');
    const after = { vxlan: await dc.link(ns, 'vxlan64'), bridge: await dc.link(ns, 'br64') };
    expect(after.vxlan.ifindex).toBe(before.vxlan.ifindex);
    expect(after.bridge.ifindex).toBe(before.bridge.ifindex);
    await waitStatus('h2', '64', (s) => s.mtu === 1300, 'status mtu 1300');
    expect(await dc.ping(vms.a, '2001:db8:64::2', { count: 2 })).toBe(true);
  });

  it('deleting the network removes both devices on every host, and their status', async () => {
    await etcd.delete().key('/v1/networks/3400');
    for (const host of ['h1', 'h2']) {
      const ns = dc.host(host).ns;
      await waitFor(async () => !(await dc.link(ns, 'vxlan3400')) && !(await dc.link(ns, 'br3400')), `br3400 and vxlan3400 gone on ${host}`);
      await waitFor(async () => (await status(host, '3400')) === undefined, `status of 3400 removed on ${host}`);
    }
    expect(await dc.link(dc.host('h1').ns, 'vxlan64')).toBeDefined();
  });

  it('a foreign bridge holding a needed name is left untouched and reported', async () => {
    const ns = dc.host('h1').ns;
    await dc.exec(ns, ['ip', 'link', 'add', 'name', 'br77', 'type', 'bridge']);
    await dc.exec(ns, ['ip', 'link', 'set', 'br77', 'mtu', '1234']);
    const foreign = await dc.link(ns, 'br77');
    await putNetwork('77', {});
    const reported = await waitStatus('h1', '77', (s) => s.state === 'error', 'conflict status');
    expect(reported.reason).toMatch(/br77 exists and is not managed by vxnetd/);
    await waitStatus('h2', '77', (s) => s.state === 'ready', 'network 77 ready on the other host');
    const still = await dc.link(ns, 'br77');
    expect(still.ifindex).toBe(foreign.ifindex);
    expect(still.mtu).toBe(1234);
    expect(still.ifalias).toBeUndefined();
    expect(await dc.link(ns, 'vxlan77')).toBeUndefined();
    // Removing the network never deletes the foreign device either.
    await etcd.delete().key('/v1/networks/77');
    await waitFor(async () => !(await dc.link(dc.host('h2').ns, 'br77')), 'br77 removed on h2');
    expect((await dc.link(ns, 'br77'))?.ifindex).toBe(foreign.ifindex);
  });

  it('an invalid spec gives an actionable status and does not disturb other networks', async () => {
    await putNetwork('5', { mtu: 9000 });
    const s = await waitStatus('h1', '5', (x) => x.state === 'error', 'error status for 5');
    expect(s.reason).toBe('mtu 9000 exceeds underlay u0 limit 1430');
    expect(await dc.link(dc.host('h1').ns, 'vxlan5')).toBeUndefined();
    await putNetwork('5', { mtu: 1400 });
    await waitStatus('h1', '5', (x) => x.state === 'ready', 'network 5 ready after the fix');
    expect((await dc.link(dc.host('h1').ns, 'vxlan5'))?.mtu).toBe(1400);
  });

  it('SIGTERM: exits 0 quickly, leaves the devices, revokes the liveness key', async () => {
    const ns = dc.host('h2').ns;
    const before = await dc.link(ns, 'vxlan64');
    const started = Date.now();
    const exit = await agents[1]!.stop('SIGTERM');
    expect(exit.code).toBe(0);
    expect(Date.now() - started).toBeLessThan(5000);
    expect((await dc.link(ns, 'vxlan64'))?.ifindex).toBe(before.ifindex);
    expect(await etcd.get('/v1/hosts/h2/agent').string()).toBeNull();
    expect(await dc.ping(vms.a, '2001:db8:64::2', { count: 2 })).toBe(true);
  });
});
