/** The reconciler against the fake kernel: restart, missing data, underlay, spec errors. */
import { describe, expect, it } from 'vitest';
import { Agent, type NetworkStatus } from '../src/agent/agent.js';
import type { Snapshot, StoredValue } from '../src/store/source.js';
import { FakeKernel } from './support/fake-kernel.js';
import { FakeTimers } from './support/fake-timers.js';
import { aliasOf, ETCD_CLUSTER, HOST, ownership } from './support/fixtures.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const value = (json: string, modRevision = 1, createRevision = 1): StoredValue => ({ value: Buffer.from(json), modRevision, createRevision });

function snapshot(networks: Record<string, string>, attachments: string[] = []): Snapshot {
  return {
    revision: 1,
    etcdCluster: ETCD_CLUSTER,
    networks: new Map(Object.entries(networks).map(([k, v]) => [k, value(v)])),
    attachments: new Map(attachments.map((hex) => [hex, value('{}')])),
    statuses: new Map(),
    members: new Map(),
    ipam: new Map(),
  };
}

function setup(kernel = new FakeKernel(), scope: 'all' | 'attached' = 'all', timers?: FakeTimers) {
  if (!kernel.byName('u0')) kernel.addLink({ name: 'u0', kind: 'veth', flags: 1, mtu: 1500, ...(kernel.ipv6 ? { addrGenMode: 0 } : {}) });
  const statuses = new Map<string, NetworkStatus | null>();
  const specErrors: string[] = [];
  const bulk: boolean[] = [];
  let readyCalls = 0;
  const agent = new Agent(kernel, quiet, { underlay: 'u0', prefix: '/v1', scope, host: HOST, resyncIntervalMs: 60_000, ...(timers ? { timers } : {}) }, {
    status: (hex, status) => statuses.set(hex, status),
    countSpecError: (reason) => specErrors.push(reason),
    bulkApply: (active) => bulk.push(active),
    ready: () => readyCalls++,
  });
  return { kernel, agent, statuses, specErrors, bulk, readyCalls: () => readyCalls };
}

describe('Agent', () => {
  it('converges a snapshot, and a second agent over the result issues no mutating request', async () => {
    const first = setup();
    await first.agent.applySnapshot(snapshot({ '64': '{}', ff01: '{"mtu":1400}' }));
    expect(first.kernel.byName('vxlanff01')).toMatchObject({ mtu: 1400, alias: aliasOf(0xff01) });
    expect(first.statuses.get('64')).toMatchObject({ state: 'ready', mtu: 1430 });
    expect(first.agent.ready).toBe(true);

    const restarted = setup(first.kernel);
    const before = first.kernel.mutatingRequests().length;
    await restarted.agent.applySnapshot(snapshot({ '64': '{}', ff01: '{"mtu":1400}' }));
    expect(first.kernel.mutatingRequests().length).toBe(before);
    expect(restarted.statuses.get('ff01')).toMatchObject({ state: 'ready' });
  });

  it('never deletes before an authoritative list: changes before the first snapshot leave devices alone', async () => {
    const { kernel, agent } = setup();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    const other = setup(kernel);
    other.agent.applyChange({ collection: 'networks', name: '64', revision: 2 });
    await other.agent.idle();
    expect(kernel.byName('vxlan64')).toBeDefined();
  });

  it('deletes networks missing from a fresh list (deleted while cut off), and only ours', async () => {
    const { kernel, agent, statuses } = setup();
    kernel.addLink({ name: 'br99', kind: 'bridge', flags: 1, mtu: 1500, alias: 'not-ours' });
    await agent.applySnapshot(snapshot({ '64': '{}', ff01: '{}' }));
    await agent.applySnapshot(snapshot({ ff01: '{}' }));
    expect(kernel.byName('vxlan64')).toBeUndefined();
    expect(kernel.byName('br64')).toBeUndefined();
    expect(kernel.byName('br99')).toBeDefined();
    expect(statuses.get('64')).toBeNull();
  });

  it('a missing underlay is reported and deletes nothing', async () => {
    const { kernel, agent, statuses } = setup();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    kernel.links.delete(kernel.byName('u0')!.index);
    const mutations = kernel.mutatingRequests().length;
    await agent.applySnapshot(snapshot({ '64': '{"mtu":1400}' }));
    expect(kernel.mutatingRequests().length).toBe(mutations);
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: 'underlay u0 not found on this host' });
  });

  it('a bad spec is an error status counted once per revision; existing devices are kept; a fix converges', async () => {
    const { kernel, agent, statuses, specErrors } = setup();
    await agent.applySnapshot(snapshot({ '64': '{}', '65': '[1]', FF01: '{}' }));
    expect(statuses.get('65')).toMatchObject({ state: 'error', reason: 'spec must be a JSON object, got an array' });
    expect(statuses.has('FF01')).toBe(false);
    expect(specErrors.sort()).toEqual(['invalid_key', 'not_object']);
    agent.applyChange({ collection: 'networks', name: '64', revision: 5, value: value('{"mtu":9000}', 5) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: 'mtu 9000 exceeds underlay u0 limit 1430', specRevision: 5 });
    expect(kernel.byName('vxlan64')?.mtu).toBe(1430);
    agent.applyChange({ collection: 'networks', name: '64', revision: 6, value: value('{"mtu":1300}', 6) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'ready', mtu: 1300 });
    expect(specErrors).toHaveLength(3);
  });

  it('a kernel failure becomes an error status with errno and leaves nothing half-built', async () => {
    const { kernel, agent, statuses } = setup();
    kernel.failNext('create', 'ENOBUFS', 'create vxlan');
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    expect(statuses.get('64')?.reason).toMatch(/create vxlan vxlan64 .*ENOBUFS/);
    expect(kernel.byName('br64')).toBeUndefined();
  });

  it('attached scope: only attached networks; an attachment to a missing network is reported', async () => {
    const { kernel, agent, statuses } = setup(new FakeKernel(), 'attached');
    await agent.applySnapshot(snapshot({ '64': '{}', ff01: '{}' }, ['ff01', '77']));
    expect(kernel.byName('vxlan64')).toBeUndefined();
    expect(kernel.byName('vxlanff01')).toBeDefined();
    expect(statuses.get('77')).toMatchObject({ state: 'error', reason: expect.stringMatching(/network 77 does not exist/) });
    agent.applyChange({ collection: 'attachments', name: 'ff01', revision: 3 });
    await agent.idle();
    expect(kernel.byName('vxlanff01')).toBeUndefined();
    expect(statuses.get('ff01')).toBeNull();
  });

  it('pauses link events during a bulk apply (and says so to its hooks), then resumes them and resyncs once', async () => {
    const { kernel, agent, bulk } = setup();
    agent.start();
    const networks = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [(0x100 + i * 2 + 0x1000).toString(16), '{}']));
    await agent.applySnapshot(snapshot(networks));
    await agent.idle();
    expect(kernel.pauses).toBe(1);
    expect(kernel.eventsPaused).toBe(false);
    expect(bulk).toEqual([true, false]);
    expect(kernel.requests.filter((r) => r.verb === 'dump')).toHaveLength(2);
    expect([...kernel.links.values()].filter((l) => l.kind === 'vxlan')).toHaveLength(40);
    // Events work again afterwards.
    await kernel.deleteLink(kernel.byName('vxlan1100')!.index, 'vandal');
    await agent.idle();
    expect(kernel.byName('vxlan1100')).toBeDefined();
    agent.stop();
  });

  it('a vxlan lost with its underlay reports the underlay, not a raw ENODEV', async () => {
    const { kernel, agent, statuses } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    kernel.links.delete(kernel.byName('u0')!.index);
    kernel.failNext('create', 'ENODEV', 'create vxlan');
    await kernel.deleteLink(kernel.byName('vxlan64')!.index, 'kernel: lower device unregistered');
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: 'underlay u0 not found on this host' });
    expect(kernel.byName('br64')).toBeDefined();
    agent.stop();
  });

  it('repairs a device deleted by hand from the link event alone', async () => {
    const { kernel, agent } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    await kernel.deleteLink(kernel.byName('vxlan64')!.index, 'vandal');
    await agent.idle();
    expect(kernel.byName('vxlan64')).toMatchObject({ master: kernel.byName('br64')!.index });
    agent.stop();
  });

  it("a new network's own link events cost no second reconcile; the bridge ifindex comes from the create's echo", async () => {
    const { kernel, agent, statuses } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({}));
    kernel.requests.length = 0;
    agent.applyChange({ collection: 'networks', name: '64', revision: 2, value: value('{}', 2) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'ready' });
    // The dump showed no device of 64: per device create, set, up and nothing else, no read for the ifindex, no rerun.
    expect(kernel.requests.map((r) => r.verb)).toEqual(['create', 'change', 'change', 'create', 'change', 'change']);

    // Kernels before 6.2 do not echo: one read of the bridge's ifindex instead.
    kernel.echoesCreates = false;
    kernel.requests.length = 0;
    agent.applyChange({ collection: 'networks', name: '65', revision: 3, value: value('{}', 3) });
    await agent.idle();
    expect(kernel.requests.map((r) => r.verb)).toEqual(['create', 'change', 'change', 'get', 'create', 'change', 'change']);
    expect(kernel.byName('vxlan65')).toMatchObject({ master: kernel.byName('br65')!.index });

    // Deleting a network: its own deletion events are no reason to look again.
    kernel.requests.length = 0;
    agent.applyChange({ collection: 'networks', name: '65', revision: 4 });
    await agent.idle();
    expect(kernel.requests.map((r) => r.verb)).toEqual(['get', 'get', 'delete', 'delete']);
    agent.stop();
  });

  it('a new network whose device appeared unseen (no event) is planned again from the kernel: a foreign one is a conflict, ours is kept', async () => {
    const { kernel, agent, statuses } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({}));
    // Added behind the agent's back: the fake kernel sends no event for addLink.
    kernel.addLink({ name: 'vxlan64', kind: 'dummy', flags: 1, mtu: 1500, alias: 'someone-else' });
    const ours = { ...ownership(0x65) };
    const ourBridge = kernel.addLink({ name: 'br65', kind: 'bridge', flags: 1, mtu: 1430, alias: aliasOf(0x65), mac: ours.bridgeMac });
    kernel.requests.length = 0;
    agent.applyChange({ collection: 'networks', name: '64', revision: 2, value: value('{}', 2) });
    agent.applyChange({ collection: 'networks', name: '65', revision: 3, value: value('{}', 3) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: expect.stringMatching(/vxlan64 exists and is not managed by vxnetd/) });
    // The bridge the failed attempt created is undone, the foreign device untouched.
    expect(kernel.byName('br64')).toBeUndefined();
    expect(kernel.byName('vxlan64')).toMatchObject({ kind: 'dummy', alias: 'someone-else' });
    expect(statuses.get('65')).toMatchObject({ state: 'ready' });
    expect(kernel.byName('br65')!.index).toBe(ourBridge.index);
    expect(kernel.byName('vxlan65')).toMatchObject({ master: ourBridge.index });
    // One read of 65's devices after the EEXIST (and of the bridge's ifindex for the vxlan's master); the existing bridge is neither deleted nor changed.
    const for65 = kernel.requests.filter((r) => r.operation.includes('65'));
    expect(for65.map((r) => `${r.verb} ${r.operation.split(' ').slice(0, 3).join(' ')}`)).toEqual([
      'create create bridge br65',
      'get get link vxlan65',
      'get get link br65',
      'get get link br65',
      'create create vxlan vxlan65',
      'change create vxlan vxlan65',
      'change create vxlan vxlan65',
    ]);
    agent.stop();
  });

  it('a network removed from etcd always reads the kernel: its devices are deleted even when the agent never saw them', async () => {
    const { kernel, agent } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({}));
    // Created behind the agent's back (no event), e.g. by an agent that crashed before the dump.
    const ours = ownership(0x64);
    const bridge = kernel.addLink({ name: 'br64', kind: 'bridge', flags: 1, mtu: 1430, alias: aliasOf(0x64), mac: ours.bridgeMac });
    kernel.addLink({ name: 'vxlan64', kind: 'vxlan', flags: 1, mtu: 1430, alias: aliasOf(0x64), mac: ours.vxlanMac, master: bridge.index });
    agent.applyChange({ collection: 'networks', name: '64', revision: 5 });
    await agent.idle();
    expect(kernel.byName('vxlan64')).toBeUndefined();
    expect(kernel.byName('br64')).toBeUndefined();
    agent.stop();
  });

  it('gives devices made by an older vxnetd (IPv6 link-local on) mode none in place, once; a kernel without IPv6 gets no such request', async () => {
    const { kernel, agent } = setup();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    const before = { br: kernel.byName('br64')!.index, vx: kernel.byName('vxlan64')!.index };
    for (const name of ['br64', 'vxlan64']) Object.assign(kernel.byName(name)!, { addrGenMode: 0, linkLocal: true });
    kernel.requests.length = 0;
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    expect(kernel.mutatingRequests()).toEqual(['update br64: no IPv6 link-local (addrgenmode none)', 'update vxlan64: no IPv6 link-local (addrgenmode none)']);
    expect({ br: kernel.byName('br64')!.index, vx: kernel.byName('vxlan64')!.index }).toEqual(before);
    kernel.requests.length = 0;
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    expect(kernel.mutatingRequests()).toEqual([]);

    const noIpv6 = setup(Object.assign(new FakeKernel(), { ipv6: false }));
    await noIpv6.agent.applySnapshot(snapshot({ '64': '{}' }));
    expect(noIpv6.kernel.byName('vxlan64')).toMatchObject({ flags: 1, alias: aliasOf(0x64) });
    expect(noIpv6.kernel.mutatingRequests()).toHaveLength(4);
    expect(noIpv6.statuses.get('64')).toMatchObject({ state: 'ready' });
  });

  it('a change made by someone else while the network is being reconciled is repaired', async () => {
    const { kernel, agent } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({}));
    const changeLink = kernel.changeLink.bind(kernel);
    let vandalised = false;
    kernel.changeLink = async (req, operation) => {
      await changeLink(req, operation);
      if (!vandalised && req.name === 'vxlan64') {
        vandalised = true; // between the agent's last change and its end, the bridge goes down
        await changeLink({ name: 'br64', up: false }, 'vandal: br64 down');
      }
    };
    agent.applyChange({ collection: 'networks', name: '64', revision: 2, value: value('{}', 2) });
    await agent.idle();
    expect(vandalised).toBe(true);
    expect(kernel.byName('br64')!.flags & 1).toBe(1);
    agent.stop();
  });

  it('a kernel failure that persists is not retried in a loop on the events of its own undo', async () => {
    const { kernel, agent, statuses } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({}));
    for (let i = 0; i < 20; i++) kernel.failNext('create', 'ENOMEM', 'create vxlan');
    agent.applyChange({ collection: 'networks', name: '64', revision: 2, value: value('{}', 2) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: expect.stringMatching(/ENOMEM/) });
    expect(kernel.requests.filter((r) => r.verb === 'create' && r.operation.startsWith('create vxlan'))).toHaveLength(1);
    expect(kernel.byName('br64')).toBeUndefined();
    agent.stop();
  });

  it('a resync over many converged networks with one new network does not pause link events', async () => {
    const { kernel, agent, statuses } = setup();
    agent.start();
    const networks = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [(0x2000 + i).toString(16), '{}']));
    await agent.applySnapshot(snapshot(networks));
    await agent.idle();
    const pausesAfterStart = kernel.pauses;
    agent.requestResync('periodic');
    agent.applyChange({ collection: 'networks', name: '64', revision: 2, value: value('{}', 2) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'ready' });
    expect(kernel.pauses).toBe(pausesAfterStart);
    agent.stop();
  });

  it('repairs a vxlan attribute changed by hand (ttl, group) from the link event, in place', async () => {
    const { kernel, agent } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    const index = kernel.byName('vxlan64')!.index;
    const group = Buffer.from(kernel.byName('vxlan64')!.vxlan!.group!);
    await kernel.changeLink({ name: 'vxlan64', kind: 'vxlan', vxlan: { ttl: 9, group: Buffer.alloc(16, 0xff) } }, 'vandal');
    await agent.idle();
    expect(kernel.byName('vxlan64')).toMatchObject({ index, vxlan: { ttl: 5, group } });
    agent.stop();
  });

  it('the periodic resync repairs drift that no event reported', async () => {
    const { kernel, agent } = setup();
    agent.start();
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    kernel.eventsPaused = true; // the change below sends no notification
    await kernel.changeLink({ name: 'br64', up: false }, 'vandal, unseen');
    kernel.eventsPaused = false;
    await agent.idle();
    expect(kernel.byName('br64')!.flags & 1).toBe(0);
    agent.requestResync('periodic');
    await agent.idle();
    expect(kernel.byName('br64')!.flags & 1).toBe(1);
    agent.stop();
  });

  it('networks whose VNIs foreign devices hold cost a trickle of requests, and converge within the backoff cap once the devices go, with no etcd event', async () => {
    const timers = new FakeTimers();
    const { kernel, agent, statuses } = setup(new FakeKernel(), 'all', timers);
    agent.start();
    const networks = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [(0x500 + i).toString(16), '{}']));
    // A foreign vxlan with the same VNI makes the kernel refuse ours: EEXIST on the VNI, not the name.
    const stopFailing = kernel.failEvery('create', 'EADDRINUSE', 'create vxlan');
    await agent.applySnapshot(snapshot(networks));
    await agent.idle();
    expect(statuses.get('500')).toMatchObject({ state: 'error', reason: expect.stringMatching(/EADDRINUSE/) });
    const afterFirst = kernel.requests.length;
    // Ten minutes with a periodic full round every minute: each network is retried after 1, 2, 4, 8,
    // 16, 32 s and then about once a minute (jittered), not in every round or on its own undo's events.
    await timers.advance(600_000, () => agent.idle());
    const attemptsPerNetwork = kernel.requests.filter((r) => r.operation.startsWith('create vxlan vxlan500')).length;
    expect(attemptsPerNetwork).toBeGreaterThanOrEqual(12);
    expect(attemptsPerNetwork).toBeLessThanOrEqual(17);
    const perSecond = (kernel.requests.length - afterFirst) / 600;
    expect(perSecond).toBeLessThan(3);
    expect(agent.reconcileStatusOf('500')).toMatchObject({ state: 'failed' });

    stopFailing();
    await timers.advance(60_000 * 1.2, () => agent.idle());
    for (const hex of Object.keys(networks)) expect(statuses.get(hex)).toMatchObject({ state: 'ready' });
    expect(agent.reconcileStatusOf('500')).toEqual({ state: 'done', failures: 0 });
    agent.stop();
  });

  it('a first reconcile that cannot read the kernel is retried, and the agent becomes ready when one succeeds', async () => {
    const timers = new FakeTimers();
    const { kernel, agent, statuses, readyCalls } = setup(new FakeKernel(), 'all', timers);
    agent.start();
    kernel.failNext('dump', 'ENOBUFS');
    await agent.applySnapshot(snapshot({ '64': '{}' }));
    expect(agent.ready).toBe(false);
    expect(kernel.byName('vxlan64')).toBeUndefined();
    await timers.advance(1_500, () => agent.idle());
    expect(agent.ready).toBe(true);
    expect(readyCalls()).toBe(1);
    expect(statuses.get('64')).toMatchObject({ state: 'ready' });
    agent.stop();
  });

  it('a periodic round before the first list does not make the agent ready', async () => {
    const timers = new FakeTimers();
    const { agent } = setup(new FakeKernel(), 'all', timers);
    agent.start();
    await timers.advance(120_000, () => agent.idle());
    expect(agent.ready).toBe(false);
    await agent.applySnapshot(snapshot({}));
    expect(agent.ready).toBe(true);
    agent.stop();
  });

  it('a foreign vxlan holding the VNI is a conflict found without a request; its deletion lets the network go ahead at once', async () => {
    const timers = new FakeTimers();
    const { kernel, agent, statuses } = setup(new FakeKernel(), 'all', timers);
    agent.start();
    const u0 = kernel.byName('u0')!.index;
    const foreign = kernel.addLink({ name: 'fx500', kind: 'vxlan', flags: 1, mtu: 1430, vxlan: { id: 0x500, port: 4789, link: u0 } });
    kernel.addLink({ name: 'other', kind: 'vxlan', flags: 1, mtu: 1430, vxlan: { id: 0x501, port: 4790, link: u0 } });
    await agent.applySnapshot(snapshot({ '500': '{}', '501': '{}' }));
    expect(statuses.get('500')).toMatchObject({ state: 'error', reason: expect.stringMatching(/device fx500 already uses VNI 1280 \(500\) on port 4789/) });
    expect(kernel.mutatingRequests().filter((op) => op.includes('500'))).toEqual([]);
    // Another port is no conflict for the kernel.
    expect(statuses.get('501')).toMatchObject({ state: 'ready' });
    await timers.advance(600_000, () => agent.idle());
    expect(kernel.requests.filter((r) => r.operation.includes('500'))).toEqual([]);

    await kernel.deleteLink(foreign.index, 'operator removes the foreign device');
    await agent.idle();
    expect(statuses.get('500')).toMatchObject({ state: 'ready' });
    expect(kernel.byName('vxlan500')).toMatchObject({ vxlan: { id: 0x500 } });
    agent.stop();
  });

  it('a status reason quotes a bad value briefly, marked as cut; a huge key name is logged cut', async () => {
    const warnings: string[] = [];
    const kernel = new FakeKernel();
    kernel.addLink({ name: 'u0', kind: 'veth', flags: 1, mtu: 1500, addrGenMode: 0 });
    const statuses = new Map<string, NetworkStatus | null>();
    const log = { ...quiet, warn: (_fields: Record<string, unknown>, msg: string) => warnings.push(msg) };
    const agent = new Agent(kernel, log, { underlay: 'u0', prefix: '/v1', scope: 'all', host: HOST, resyncIntervalMs: 60_000 }, { status: (hex, status) => statuses.set(hex, status) });
    await agent.applySnapshot(snapshot({ '64': JSON.stringify({ type: 'x'.repeat(60_000) }), ['k'.repeat(100_000)]: '{}' }));
    const reason = statuses.get('64')!.reason!;
    expect(reason.length).toBeLessThan(200);
    expect(reason).toMatch(/^type "x{39}… \(60002 characters, cut\) is not supported/);
    const keyWarning = warnings.find((w) => w.startsWith('ignoring network key'))!;
    expect(keyWarning.length).toBeLessThan(300);
  });

  it('attached scope: an attachment that is not a JSON object is an error for that network only; its devices are kept', async () => {
    const { kernel, agent, statuses, specErrors } = setup(new FakeKernel(), 'attached');
    const snap = snapshot({ '64': '{}', '65': '{}' }, ['64', '65']);
    await agent.applySnapshot(snap);
    expect(kernel.byName('vxlan64')).toBeDefined();
    agent.applyChange({ collection: 'attachments', name: '64', revision: 5, value: value('[1, 2]', 5) });
    await agent.idle();
    expect(statuses.get('64')).toMatchObject({ state: 'error', reason: 'attachment must be a JSON object, got an array' });
    expect(kernel.byName('vxlan64')).toBeDefined();
    expect(statuses.get('65')).toMatchObject({ state: 'ready' });
    expect(specErrors).toEqual(['not_object']);
  });
});

describe('bridges ignore router advertisements', () => {
  it('once per bridge, whatever the reconciles; a file system that refuses is reported once, a bridge without IPv6 skipped', async () => {
    const kernel = new FakeKernel();
    kernel.addLink({ name: 'u0', kind: 'veth', flags: 1, mtu: 1500, addrGenMode: 0 });
    const quietened: string[] = [];
    const errors: string[] = [];
    let refuse: Error | undefined;
    const log = { ...quiet, error: (_fields: Record<string, unknown>, msg: string) => errors.push(msg) };
    const agent = new Agent(
      kernel,
      log,
      {
        underlay: 'u0',
        prefix: '/v1',
        scope: 'all',
        host: HOST,
        resyncIntervalMs: 60_000,
        ipv6Settings: {
          ignoreRouterAdvertisements: (device) => {
            if (refuse) throw refuse;
            quietened.push(device);
          },
        },
      },
      { status: () => undefined },
    );
    await agent.applySnapshot(snapshot({ '64': '{}', ff01: '{}' }));
    await agent.applySnapshot(snapshot({ '64': '{}', ff01: '{}' }));
    expect(quietened.sort()).toEqual(['br64', 'brff01']);
    refuse = Object.assign(new Error("EROFS: read-only file system, open '/proc/sys/net/ipv6/conf/br65/accept_ra'"), { code: 'EROFS' });
    await agent.applySnapshot(snapshot({ '64': '{}', ff01: '{}', '65': '{}', '66': '{}' }));
    expect(errors).toEqual([expect.stringContaining('set net.ipv6.conf.default.accept_ra=0')]);
  });
});
