/** Unicast flooding against the fake kernel: the FloodEntries kind, the members index, statuses and membership. */
import { describe, expect, it } from 'vitest';
import { Agent, type NetworkStatus } from '../src/agent/agent.js';
import { FloodMembers } from '../src/agent/flood-members.js';
import { NTF_SELF, NUD_PERMANENT } from '../src/model/neighbour.js';
import type { MemberChange, Snapshot, StoredValue } from '../src/store/source.js';
import { FakeKernel } from './support/fake-kernel.js';
import { FakeTimers } from './support/fake-timers.js';
import { ETCD_CLUSTER, HOST } from './support/fixtures.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const value = (json: string, modRevision = 1): StoredValue => ({ value: Buffer.from(json), modRevision, createRevision: 1 });
const member = (address: string) => value(JSON.stringify({ address }));
/** fd00::<n> as the kernel's bytes in hex. */
const fd00 = (n: number) => `fd00${'0'.repeat(26)}${n.toString(16).padStart(2, '0')}`;
const entry = (index: number, destination: string, state = NUD_PERMANENT) => ({ family: 7, index, state, flags: NTF_SELF, mac: Buffer.alloc(6), destination: Buffer.from(destination, 'hex') });

function snapshot(networks: string[], members: Record<string, Record<string, string>>): Snapshot {
  return {
    revision: 1,
    etcdCluster: ETCD_CLUSTER,
    networks: new Map(networks.map((hex) => [hex, value('{}')])),
    attachments: new Map(),
    statuses: new Map(),
    members: new Map(Object.entries(members).map(([hex, hosts]) => [hex, new Map(Object.entries(hosts).map(([host, address]) => [host, member(address)]))])),
    ipam: new Map(),
  };
}

function setup(kernel = new FakeKernel(), timers?: FakeTimers) {
  if (!kernel.byName('u0')) kernel.addLink({ name: 'u0', kind: 'veth', flags: 1, mtu: 1500, addrGenMode: 0 });
  const statuses = new Map<string, NetworkStatus | null>();
  const membership: string[] = [];
  const agent = new Agent(
    kernel,
    quiet,
    { underlay: 'u0', prefix: '/v1', scope: 'all', host: { ...HOST, flood: 'unicast' }, resyncIntervalMs: 60_000, ...(timers ? { timers, random: () => 0.5 } : {}) },
    { status: (hex, status) => statuses.set(hex, status), membership: (hex, isMember) => membership.push(`${hex} ${isMember}`) },
  );
  agent.start();
  return { kernel, agent, statuses, membership };
}

const change = (hex: string, host: string, address?: string): MemberChange => ({ hex, host, revision: 2, ...(address ? { value: member(address) } : {}) });

describe('unicast flooding (FloodEntries)', () => {
  it('gives the vxlan no group and one permanent all-zeros entry per other host of the network, and publishes this host as a member', async () => {
    const { kernel, agent, statuses, membership } = setup();
    await agent.applySnapshot(snapshot(['64'], { '64': { hv1: 'fd00::1', h2: 'fd00::2', h3: 'fd00::3' } }));
    await agent.idle();
    const vxlan = kernel.byName('vxlan64')!;
    expect(vxlan.vxlan?.group, 'the unspecified address: an IPv6 vxlan without a group').toEqual(Buffer.alloc(16));
    expect(kernel.floodDestinations('vxlan64'), 'not to itself').toEqual([fd00(2), fd00(3)]);
    expect(kernel.forwarding.every((n) => n.state === NUD_PERMANENT && n.flags === NTF_SELF)).toBe(true);
    expect(statuses.get('64')).toMatchObject({ state: 'ready', floodPeers: 2 });
    expect(agent.floodPeerCounts()).toEqual([{ hex: '64', peers: 2 }]);
    expect(membership).toContain('64 true');
  });

  it('follows the members index: a host that joins or leaves is added or removed, the others untouched', async () => {
    const { kernel, agent, statuses } = setup();
    await agent.applySnapshot(snapshot(['64'], { '64': { h2: 'fd00::2' } }));
    await agent.idle();
    agent.applyMemberChange(change('64', 'h3', 'fd00::3'));
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(2), fd00(3)]);
    const requests = kernel.neighbourRequests().length;
    agent.applyMemberChange(change('64', 'hv1', 'fd00::1'));
    await agent.idle();
    expect(kernel.neighbourRequests().length, "this host's own key changes nothing").toBe(requests);
    agent.applyMemberChange(change('64', 'h2'));
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(3)]);
    expect(kernel.neighbourRequests().slice(requests)).toEqual([expect.stringMatching(/^delete flood entry of vxlan64 to fd00::2$/)]);
    expect(statuses.get('64')).toMatchObject({ floodPeers: 1 });
    // A network no longer watched (scope attached: detached) keeps no peers.
    agent.replaceMembers('64', new Map([['h4', member('fd00::4')]]));
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(4)]);
  });

  it('repairs entries changed by hand from their notifications, and leaves entries for specific MACs alone', async () => {
    const { kernel, agent } = setup();
    await agent.applySnapshot(snapshot(['64'], { '64': { h2: 'fd00::2' } }));
    await agent.idle();
    const index = kernel.byName('vxlan64')!.index;
    const specific = { ...entry(index, fd00(9)), mac: Buffer.from('020000000099', 'hex') };
    kernel.handEditForwarding('new', specific);
    kernel.handEditForwarding('del', entry(index, fd00(2)));
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(2)]);
    kernel.handEditForwarding('new', entry(index, fd00(8)));
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(2)]);
    // Made reachable-only (not permanent) by hand: replaced by a permanent one.
    kernel.handEditForwarding('new', entry(index, fd00(2), 0x02));
    await agent.idle();
    expect(kernel.forwarding.filter((n) => n.mac!.every((b) => b === 0))).toEqual([expect.objectContaining({ state: NUD_PERMANENT, destination: Buffer.from(fd00(2), 'hex') })]);
    expect(kernel.forwarding).toContainEqual(specific);
  });

  it('a restart over converged networks makes no link and no forwarding-entry request', async () => {
    const first = setup();
    await first.agent.applySnapshot(snapshot(['64', 'ff01'], { '64': { h2: 'fd00::2', h3: 'fd00::3' }, ff01: { h2: 'fd00::2' } }));
    await first.agent.idle();
    first.agent.stop();
    const links = first.kernel.mutatingRequests().length;
    const entries = first.kernel.neighbourRequests().length;
    const restarted = setup(first.kernel);
    await restarted.agent.applySnapshot(snapshot(['64', 'ff01'], { '64': { h2: 'fd00::2', h3: 'fd00::3' }, ff01: { h2: 'fd00::2' } }));
    await restarted.agent.idle();
    expect(first.kernel.mutatingRequests().length).toBe(links);
    expect(first.kernel.neighbourRequests().length).toBe(entries);
    expect(restarted.statuses.get('ff01')).toMatchObject({ state: 'ready', floodPeers: 1 });
  });

  it('a refused entry makes the status an error and is retried with backoff until it goes in', async () => {
    const timers = new FakeTimers();
    const { kernel, agent, statuses } = setup(new FakeKernel(), timers);
    const restore = kernel.failEvery('neigh_add', 'EPERM');
    await agent.applySnapshot(snapshot(['64'], { '64': { h2: 'fd00::2' } }));
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: expect.stringMatching(/^flood entries: .*EPERM/) });
    expect(kernel.byName('vxlan64'), 'the devices stay').toBeDefined();
    restore();
    await timers.advance(2_000);
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(2)]);
    expect(statuses.get('64')).toMatchObject({ state: 'ready', floodPeers: 1 });
  });

  it('never floods to an address of another family than the overlay', async () => {
    const { kernel, agent, statuses } = setup();
    await agent.applySnapshot(snapshot(['64'], { '64': { h2: '192.0.2.2', h3: 'fd00::3', h4: 'not an address' } }));
    await agent.idle();
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(3)]);
    expect(statuses.get('64')).toMatchObject({ floodPeers: 1 });
  });

  it('a multicast vxlan becomes a unicast one by replacement: the bridge and its ports stay', async () => {
    const kernel = new FakeKernel();
    kernel.addLink({ name: 'u0', kind: 'veth', flags: 1, mtu: 1500, addrGenMode: 0 });
    const multicast = new Agent(kernel, quiet, { underlay: 'u0', prefix: '/v1', scope: 'all', host: HOST, resyncIntervalMs: 60_000 }, { status: () => undefined });
    await multicast.applySnapshot(snapshot(['64'], {}));
    const bridge = kernel.byName('br64')!.index;
    const vxlan = kernel.byName('vxlan64')!.index;
    const { agent } = setup(kernel);
    await agent.applySnapshot(snapshot(['64'], { '64': { h2: 'fd00::2' } }));
    await agent.idle();
    expect(kernel.byName('br64')!.index).toBe(bridge);
    expect(kernel.byName('vxlan64')!.index).not.toBe(vxlan);
    expect(kernel.floodDestinations('vxlan64')).toEqual([fd00(2)]);
  });

  it('a network that goes from this host is no longer published as carried here', async () => {
    const { agent, membership } = setup();
    await agent.applySnapshot(snapshot(['64'], { '64': { h2: 'fd00::2' } }));
    await agent.applySnapshot(snapshot([], {}));
    await agent.idle();
    expect(membership.at(-1)).toBe('64 false');
  });
});

describe('FloodMembers', () => {
  it('keeps the other hosts of each watched network, sorted, and ignores values that are not members', () => {
    const members = new FloodMembers('hv1', quiet);
    members.replaceAll(new Map([['64', new Map([['h3', member('fd00::3')], ['hv1', member('fd00::1')], ['h2', member('fd00::2')], ['bad', value('[]')]])]]));
    expect(members.peers('64')).toEqual([
      { host: 'h2', address: 'fd00::2' },
      { host: 'h3', address: 'fd00::3' },
    ]);
    expect(members.apply(change('64', 'hv1', 'fd00::9')), 'own key').toBe(false);
    expect(members.apply(change('64', 'h2', 'fd00::2')), 'same address').toBe(false);
    expect(members.apply(change('64', 'h2'))).toBe(true);
    members.replace('64', undefined);
    expect(members.peers('64')).toEqual([]);
  });
});
