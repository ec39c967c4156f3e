/** The router's addresses (BridgeAddresses) against the fake kernel, with a recording advertiser in place of radvd. */
import { describe, expect, it } from 'vitest';
import { Agent, type NetworkStatus } from '../src/agent/agent.js';
import { WITHDRAW_MS } from '../src/agent/bridge-addresses.js';
import type { Advertisement } from '../src/agent/radvd.js';
import { IFA_F_DADFAILED, VXNETD_ADDRESS_PROTOCOL } from '../src/model/address.js';
import type { Snapshot, StoredValue } from '../src/store/source.js';
import { FakeKernel } from './support/fake-kernel.js';
import { FakeTimers } from './support/fake-timers.js';
import { ETCD_CLUSTER, HOST } from './support/fixtures.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const value = (json: string, modRevision = 1): StoredValue => ({ value: Buffer.from(json), modRevision, createRevision: 1 });
const ipamEntry = (prefix: string, dns: string[] = []) => JSON.stringify({ prefix, dns, createdAt: '2026-12-02T00:00:00Z' });
const hex = (text: string) => Buffer.from(text, 'hex');
/** 2001:db8:100:64::1 and ::2 as the kernel's bytes. */
const ROUTER_1 = hex('20010db8010000640000000000000001');
const ROUTER_2 = hex('20010db8010000640000000000000002');

function snapshot(ipam: Record<string, string>, networks = ['64'], routerNumber = 1): Snapshot {
  return {
    revision: 1,
    etcdCluster: ETCD_CLUSTER,
    networks: new Map(networks.map((name) => [name, value('{}')])),
    attachments: new Map(),
    statuses: new Map(),
    members: new Map(),
    ipam: new Map(Object.entries(ipam).map(([name, json]) => [name, value(json, 7)])),
    routerNumber,
  };
}

function setup(kernel = new FakeKernel(), timers = new FakeTimers()) {
  if (!kernel.byName('u0')) kernel.addLink({ name: 'u0', kind: 'veth', flags: 1, mtu: 1500, addrGenMode: 0 });
  const statuses = new Map<string, NetworkStatus | null>();
  const advertised = new Map<string, Advertisement | undefined>();
  const agent = new Agent(
    kernel,
    quiet,
    { underlay: 'u0', prefix: '/v1', scope: 'all', host: HOST, resyncIntervalMs: 60_000, timers, random: () => 0.5, router: { advertiser: { set: (h, a) => advertised.set(h, a) } } },
    { status: (h, status) => statuses.set(h, status) },
  );
  agent.start();
  return { kernel, agent, statuses, advertised, timers };
}

const onBridge = (kernel: FakeKernel, name = 'br64') => kernel.addresses.filter((a) => a.index === kernel.byName(name)?.index);

describe('a router (BridgeAddresses)', () => {
  it("gives a routed network's bridge a link-local address and <prefix>::<router number>, both marked as vxnetd's, and hands radvd the advertisement", async () => {
    const { kernel, agent, statuses, advertised } = setup();
    await agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64', ['2001:db8::53']) }));
    await agent.idle();
    const addresses = onBridge(kernel);
    expect(addresses.map((a) => a.address.toString('hex')).sort()).toEqual([ROUTER_1.toString('hex'), expect.stringMatching(/^fe80000000000000/)].sort());
    expect(addresses.every((a) => a.protocol === VXNETD_ADDRESS_PROTOCOL && a.prefixLength === 64)).toBe(true);
    expect(advertised.get('64')).toEqual({ hex: '64', bridge: 'br64', prefix: '2001:db8:100:64::/64', mtu: 1430, dns: ['2001:db8::53'], revision: 7 });
    // radvd's report becomes the status's.
    agent.radvdReported([{ hex: '64', revision: 7, prefix: '2001:db8:100:64::/64', withdrawn: false, served: true }]);
    expect(statuses.get('64')).toMatchObject({ state: 'ready', ipam: { revision: 7, prefix: '2001:db8:100:64::/64' } });
  });

  it('a layer-2 network gets no address; a restart over a converged router makes no request', async () => {
    const first = setup();
    await first.agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }, ['64', '65']));
    await first.agent.idle();
    expect(onBridge(first.kernel, 'br65')).toEqual([]);
    first.agent.stop();
    const before = first.kernel.addressRequests().length;
    const second = setup(first.kernel);
    await second.agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }, ['64', '65']));
    await second.agent.idle();
    expect(first.kernel.addressRequests().length).toBe(before);
    expect(second.advertised.get('64')).toMatchObject({ prefix: '2001:db8:100:64::/64' });
  });

  it('the router number decides the address', async () => {
    const { kernel, agent } = setup();
    await agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }, ['64'], 2));
    await agent.idle();
    expect(onBridge(kernel).some((a) => a.address.equals(ROUTER_2))).toBe(true);
  });

  it('repairs its address deleted by hand from the notification; leaves a foreign address alone, and reports one that holds its own', async () => {
    const { kernel, agent, statuses, timers } = setup();
    await agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }));
    await agent.idle();
    const ours = onBridge(kernel).find((a) => a.address.equals(ROUTER_1))!;
    const index = ours.index;
    kernel.handEditAddress('new', { family: 10, index, prefixLength: 64, address: hex('20010db8010000640000000000000099'), flags: 0, scope: 0 });
    kernel.handEditAddress('del', ours);
    await agent.idle();
    expect(onBridge(kernel).map((a) => a.address.toString('hex'))).toContain(ROUTER_1.toString('hex'));
    expect(onBridge(kernel).map((a) => a.address.toString('hex'))).toContain('20010db8010000640000000000000099');

    // Someone else put the router's own address there: left alone, reported.
    kernel.handEditAddress('del', onBridge(kernel).find((a) => a.address.equals(ROUTER_1))!);
    kernel.handEditAddress('new', { family: 10, index, prefixLength: 64, address: ROUTER_1, flags: 0, scope: 0 });
    await agent.idle();
    // The repair of the deletion may have raced the foreign add (EEXIST): it plans again from a fresh read.
    await timers.advance(2_000, () => agent.idle());
    expect(onBridge(kernel).find((a) => a.address.equals(ROUTER_1))?.protocol).toBeUndefined();
    expect(statuses.get('64')).toMatchObject({ state: 'error', ipam: { revision: 7, reason: expect.stringContaining('not added by vxnetd: left alone') } });
  });

  it('a duplicate address (DAD failed) is reported and tried again with backoff', async () => {
    const { kernel, agent, statuses, timers } = setup();
    await agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }));
    await agent.idle();
    const ours = onBridge(kernel).find((a) => a.address.equals(ROUTER_1))!;
    kernel.handEditAddress('new', { ...ours, flags: ours.flags | IFA_F_DADFAILED });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: expect.stringContaining('failed duplicate address detection') });
    expect(onBridge(kernel).some((a) => a.address.equals(ROUTER_1)), 'the failed one is deleted').toBe(false);
    await timers.advance(2_000, () => agent.idle());
    expect(onBridge(kernel).find((a) => a.address.equals(ROUTER_1))?.flags, 'added again after the backoff, for a fresh DAD').toBe(0);
    expect(statuses.get('64')?.state).toBe('error');
    // radvd (here the recording advertiser) says again how it stands once the address is back.
    agent.radvdReported([{ hex: '64', revision: 7, prefix: '2001:db8:100:64::/64', withdrawn: false, served: true }]);
    expect(statuses.get('64')).toMatchObject({ state: 'ready', ipam: { revision: 7, prefix: '2001:db8:100:64::/64' } });
  });

  it('an IPAM entry deleted: the router address goes at once, the prefix is withdrawn, then the link-local address goes too', async () => {
    const { kernel, agent, advertised, statuses, timers } = setup();
    await agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }));
    await agent.idle();
    agent.applyChange({ collection: 'ipam', name: '64', revision: 9 });
    await agent.idle();
    expect(onBridge(kernel).map((a) => a.address.toString('hex'))).toEqual([expect.stringMatching(/^fe80/)]);
    expect(advertised.get('64')).toMatchObject({ withdrawn: true });
    expect(statuses.get('64')?.ipam).toBeUndefined();
    await timers.advance(WITHDRAW_MS, () => agent.idle());
    expect(advertised.get('64')).toBeUndefined();
    expect(onBridge(kernel)).toEqual([]);
  });

  it('refuses connections from tenant networks only', async () => {
    const { agent } = setup();
    await agent.applySnapshot(snapshot({ '64': ipamEntry('2001:db8:100:64::/64') }));
    expect(agent.isTenantClient('2001:db8:100:64:5054:ff:fed6:c2a9')).toBe(true);
    expect(agent.isTenantClient('2001:db8:100:65::1')).toBe(false);
    expect(agent.isTenantClient('fd00:1::10')).toBe(false);
    expect(agent.isTenantClient('::ffff:192.0.2.1')).toBe(false);
  });
});
