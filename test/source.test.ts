/** The ListWatch loop with a fake etcd client and an injected clock: no sleeping, no etcd. */
import { EventEmitter } from 'node:events';
import { GRPCDeadlineExceededError, GRPCInvalidArgumentError, GRPCResourceExhastedError, type Etcd3 } from 'etcd3';
import { describe, expect, it } from 'vitest';
import type { Clock } from '../src/store/backoff.js';
import type { EtcdOptions } from '../src/store/client.js';
import { serializeStatus, type NetworkStatus } from '../src/store/schema.js';
import { DesiredStateSource, type DesiredStateSink, type Change, type Snapshot } from '../src/store/source.js';

type FakeWatcher = EventEmitter & { cancelled: boolean; id: string | null; dir?: string; from?: string };
type FakeLease = EventEmitter & { released: boolean };

interface FakeEtcdState {
  revision: number;
  kv: Map<string, string>;
  noDataId?: boolean;
  /** Number of upcoming list calls that fail as if etcd were unreachable. */
  failLists: number;
  /** Each range read: where it started and the revision it asked for. */
  ranges?: Array<{ from: string; revision?: number }>;
  /** Called before the n-th range read is answered. */
  beforeRange?: (n: number) => void;
  /** Replies larger than this fail as the client's receive limit makes them fail. */
  maxReplyBytes?: number;
  /** Ranges at a revision below this fail as compacted. */
  compactedBelow?: number;
  watchers: FakeWatcher[];
  clients: number;
  /** Clients closed, leases made. */
  closed?: number;
  leases?: FakeLease[];
  /** Number of upcoming liveness puts that fail. */
  failLivenessPuts?: number;
  /** Keys of each status transaction ('put k' / 'delete k'). */
  txns?: string[][];
  /** Number of upcoming transactions that fail as if etcd were unreachable. */
  failTxns?: number;
  /** Transactions that etcd refuses as such (too large), by their ops and bytes; the sizes of those refused. */
  refuseTxn?: (ops: string[], bytes: number) => boolean;
  refused?: number[];
  /** Bytes of keys and values of each transaction written. */
  txnBytes?: number[];
  /** The endpoints each client was built with. */
  endpoints?: string[][];
  /** Watches etcd has not confirmed (no id) when they are made; confirmed at once otherwise. */
  unconfirmedWatches?: boolean;
}

function fakeClientFactory(state: FakeEtcdState) {
  return (options: EtcdOptions) => {
    state.clients++;
    (state.endpoints ??= []).push(options.endpoints);
    const range = async (request: { key: Buffer; range_end?: Buffer; limit?: number; revision?: number }) => {
      if (state.failLists > 0) {
        state.failLists--;
        throw new Error('14 UNAVAILABLE: connect ECONNREFUSED');
      }
      const from = request.key.toString();
      (state.ranges ??= []).push({ from, revision: request.revision });
      state.beforeRange?.(state.ranges.length);
      if (request.revision !== undefined && request.revision < (state.compactedBelow ?? 0)) {
        throw new Error('11 OUT_OF_RANGE: etcdserver: mvcc: required revision has been compacted');
      }
      // No range_end: that one key.
      const end = request.range_end ? request.range_end.toString() : `${from}\0`;
      const keys = [...state.kv.keys()].filter((key) => key >= from && key < end).sort();
      const replyBytes = keys.slice(0, request.limit ?? keys.length).reduce((sum, key) => sum + key.length + state.kv.get(key)!.length, 0);
      if (replyBytes > (state.maxReplyBytes ?? Infinity)) {
        throw new GRPCResourceExhastedError(`8 RESOURCE_EXHAUSTED: Received message larger than max (${replyBytes} vs. ${state.maxReplyBytes})`);
      }
      const kvs = keys
        .slice(0, request.limit ?? keys.length)
        .map((key) => ({ key: Buffer.from(key), value: Buffer.from(state.kv.get(key)!), mod_revision: String(state.revision), create_revision: String(state.revision) }));
      return { header: { revision: String(request.revision ?? state.revision) }, kvs, more: keys.length > (request.limit ?? keys.length), count: String(keys.length) };
    };
    const client = {
      // The data id: present unless a test removes it; made with a create-if-absent transaction otherwise.
      get: (key: string) => ({ buffer: async () => (state.kv.has(key) ? Buffer.from(state.kv.get(key)!) : key === '/v1/data-id' && !state.noDataId ? Buffer.from('{"id":"00000000000000ab"}') : null) }),
      put: (key: string) => ({ value: (value: string) => ({ key, value }) }),
      if: (key: string) => ({ then: (put: { key: string; value: string }) => ({ commit: async () => void (state.kv.has(key) || state.kv.set(put.key, put.value)) }) }),
      lease: () => {
        const lease = Object.assign(new EventEmitter(), {
          released: false,
          put: () => ({
            value: () => ({
              exec: async () => {
                if ((state.failLivenessPuts ?? 0) > 0) {
                  state.failLivenessPuts!--;
                  throw new Error('4 DEADLINE_EXCEEDED');
                }
                return {};
              },
            }),
          }),
          release: () => void (lease.released = true),
          revoke: async () => void (lease.released = true),
        });
        (state.leases ??= []).push(lease);
        return lease;
      },
      watch: () => {
        const builder = {
          dir: '',
          from: '',
          prefix: (dir: string) => Object.assign(builder, { dir }),
          key: (dir: string) => Object.assign(builder, { dir }),
          startRevision: (from: string) => Object.assign(builder, { from }),
          watcher: () => {
            const watcher = Object.assign(new EventEmitter(), {
              dir: builder.dir,
              from: builder.from,
              cancelled: false,
              id: state.unconfirmedWatches ? null : String(state.watchers.length),
              cancel: async () => void (watcher.cancelled = true),
            });
            state.watchers.push(watcher);
            return watcher;
          },
        };
        return builder;
      },
      kv: {
        range,
        txn: async (request: { success: Array<{ request_put?: { key: Buffer; value: Buffer }; request_delete_range?: { key: Buffer } }> }) => {
          if ((state.failTxns ?? 0) > 0) {
            state.failTxns!--;
            throw new GRPCDeadlineExceededError('4 DEADLINE_EXCEEDED: Deadline exceeded');
          }
          const ops = request.success.map((op) =>
            op.request_put ? `put ${op.request_put.key.toString()}` : `delete ${op.request_delete_range!.key.toString()}`,
          );
          const bytes = request.success.reduce((sum, op) => sum + (op.request_put ? op.request_put.key.length + op.request_put.value.length : op.request_delete_range!.key.length), 0);
          if (state.refuseTxn?.(ops, bytes)) {
            (state.refused ??= []).push(ops.length);
            throw new GRPCInvalidArgumentError('3 INVALID_ARGUMENT: etcdserver: request is too large');
          }
          (state.txnBytes ??= []).push(bytes);
          (state.txns ??= []).push(ops);
          for (const op of request.success) {
            if (op.request_put) state.kv.set(op.request_put.key.toString(), op.request_put.value.toString());
            else state.kv.delete(op.request_delete_range!.key.toString());
          }
          state.revision++;
          return {};
        },
      },
      close: () => void (state.closed = (state.closed ?? 0) + 1),
    };
    return client as unknown as Etcd3;
  };
}

/** A clock whose sleeps wait until the test ends them, or their signal aborts. */
function heldClock(now: () => number): Clock & { sleeps: Array<{ ms: number; end: () => void }> } {
  const sleeps: Array<{ ms: number; end: () => void }> = [];
  return {
    sleeps,
    now,
    sleep: (ms, signal) =>
      new Promise<void>((end) => {
        sleeps.push({ ms, end });
        signal?.addEventListener('abort', () => end());
      }),
  };
}

/** A clock whose sleeps are recorded and end at once. */
function recordingClock(): Clock & { sleeps: number[] } {
  const sleeps: number[] = [];
  return { sleeps, now: () => 0, sleep: async (ms) => void sleeps.push(ms) };
}

const quiet = { info: () => undefined, warn: () => undefined };

/** A status as the agent writes it: ready unless a reason is given. */
function status(hex: string, reason?: string, updatedAt = '2025-01-01T00:00:00.000Z'): NetworkStatus {
  return { state: reason ? 'error' : 'ready', ...(reason ? { reason } : {}), vxlan: `vxlan${hex}`, bridge: `br${hex}`, updatedAt };
}
const stored = (hex: string, reason?: string, updatedAt?: string) => serializeStatus(status(hex, reason, updatedAt));
const flush = () => new Promise((resolve) => setTimeout(resolve, 0));

function makeSource(state: FakeEtcdState, clock: Clock, watchAttachments = false, sink?: DesiredStateSink, endpoints = ['http://etcd:2379'], memberAddress?: () => string | undefined) {
  return new DesiredStateSource({
    ...(sink ? { sink } : {}),
    ...(memberAddress ? { memberAddress } : {}),
    etcd: { endpoints },
    prefix: '/v1',
    hostname: 'hv1',
    watchAttachments,
    liveness: () => ({ version: '0', pid: 1, startedAt: 'then', underlay: 'u0', ready: false }),
    log: quiet,
    clock,
    createClient: fakeClientFactory(state),
  });
}

describe('DesiredStateSource', () => {
  it('retries an unreachable etcd with capped exponential backoff, then lists', async () => {
    const state: FakeEtcdState = { revision: 7, kv: new Map([['/v1/networks/64', '{}']]), failLists: 3, watchers: [], clients: 0 };
    const clock = recordingClock();
    const source = makeSource(state, clock);
    const snapshots: Snapshot[] = [];
    source.on('snapshot', (s) => snapshots.push(s));
    source.start();
    for (let i = 0; i < 20 && snapshots.length === 0; i++) await flush();
    expect(clock.sleeps).toEqual([200, 400, 800]);
    expect(state.clients).toBe(4);
    expect(snapshots).toHaveLength(1);
    expect(snapshots[0]!.revision).toBe(7);
    expect([...snapshots[0]!.networks.keys()]).toEqual(['64']);
    expect(source.isConnected).toBe(true);
    await source.stop();
  });

  it('hands the sink each snapshot and change by direct calls, a change only after the snapshot before it is applied', async () => {
    const state: FakeEtcdState = { revision: 4, kv: new Map([['/v1/networks/64', '{}']]), failLists: 0, watchers: [], clients: 0 };
    const calls: string[] = [];
    let finishSnapshot!: () => void;
    const sink: DesiredStateSink = {
      applySnapshot: (snapshot) => {
        calls.push(`snapshot ${[...snapshot.networks.keys()].join(',')}`);
        return new Promise<void>((resolve) => (finishSnapshot = () => (calls.push('snapshot applied'), resolve())));
      },
      applyChange: (change) => void calls.push(`change ${change.name}`),
    };
    const source = makeSource(state, recordingClock(), false, sink);
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    state.watchers[0]!.emit('put', { key: Buffer.from('/v1/networks/65'), value: Buffer.from('{}'), mod_revision: '5', create_revision: '5' });
    await flush();
    expect(calls).toEqual(['snapshot 64']);
    finishSnapshot();
    await flush();
    expect(calls).toEqual(['snapshot 64', 'snapshot applied', 'change 65']);
    await source.stop();
  });

  it('builds each client on one member, and the next one on the next member whatever ended the pass', async () => {
    const members = ['http://[fd00::1]:2379', 'http://[fd00::2]:2379', 'http://[fd00::3]:2379'];
    const state: FakeEtcdState = { revision: 7, kv: new Map(), failLists: 2, watchers: [], clients: 0 };
    const source = makeSource(state, recordingClock(), false, undefined, members);
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    state.watchers[0]!.emit('disconnected');
    // Two watchers a pass in scope all: networks and the members index.
    for (let i = 0; i < 20 && state.watchers.length === 2; i++) await flush();
    await source.stop();
    // Two failed lists, a watch that broke, the pass that stopped: four clients, each on one member, in turn.
    const used = state.endpoints!;
    expect(used.map((endpoints) => endpoints.length)).toEqual([1, 1, 1, 1]);
    const first = members.indexOf(used[0]![0]!);
    expect(used.map(([endpoint]) => endpoint)).toEqual([0, 1, 2, 3].map((step) => members[(first + step) % members.length]));
  });

  it('a watch etcd does not confirm within the call timeout ends the pass; the next member is tried', async () => {
    const members = ['http://[fd00::1]:2379', 'http://[fd00::2]:2379', 'http://[fd00::3]:2379'];
    const state: FakeEtcdState = { revision: 7, kv: new Map(), failLists: 0, watchers: [], clients: 0, unconfirmedWatches: true };
    const clock = heldClock(() => 0);
    const connected: boolean[] = [];
    // Scope all: two watches a pass (networks, members index).
    const source = makeSource(state, clock, false, undefined, members);
    source.on('connected', (c) => connected.push(c));
    source.start();
    for (let i = 0; i < 20 && clock.sleeps.length === 0; i++) await flush();
    expect(clock.sleeps.map((sleep) => sleep.ms)).toEqual([5000]);
    expect(state.watchers).toHaveLength(2);
    // One of the two confirmed: still not a watch to rely on.
    state.watchers[0]!.id = '1';
    clock.sleeps[0]!.end();
    for (let i = 0; i < 20 && clock.sleeps.length === 1; i++) await flush();
    expect(connected).toEqual([true, false]);
    expect(state.watchers.map((watcher) => watcher.cancelled)).toEqual([true, true]);
    expect(clock.sleeps.map((sleep) => sleep.ms)).toEqual([5000, 200]);
    // Confirmed in time: the timer ends without breaking anything.
    state.unconfirmedWatches = false;
    clock.sleeps[1]!.end();
    for (let i = 0; i < 20 && state.clients < 2; i++) await flush();
    for (let i = 0; i < 20; i++) await flush();
    expect(connected).toEqual([true, false, true]);
    expect(clock.sleeps).toHaveLength(2);
    expect(state.endpoints!.map(([endpoint]) => members.indexOf(endpoint!))).toEqual([0, 1].map((step) => (members.indexOf(state.endpoints![0]![0]!) + step) % 3));
    await source.stop();
  });

  it('with several members, the delay grows once per round of members that all failed, not per failed member', async () => {
    const members = ['http://[fd00::1]:2379', 'http://[fd00::2]:2379', 'http://[fd00::3]:2379'];
    const state: FakeEtcdState = { revision: 7, kv: new Map(), failLists: 7, watchers: [], clients: 0 };
    const clock = recordingClock();
    const source = makeSource(state, clock, false, undefined, members);
    source.start();
    for (let i = 0; i < 40 && state.watchers.length === 0; i++) await flush();
    expect(clock.sleeps).toEqual([200, 200, 200, 400, 400, 400, 800]);
    expect(state.clients).toBe(8);
    await source.stop();
  });

  it('logs each list and each watched change at debug level when it arrives, whatever the kernel then takes', async () => {
    const state: FakeEtcdState = { revision: 4, kv: new Map([['/v1/hosts/hv1/networks/ff01', '{}']]), failLists: 0, watchers: [], clients: 0 };
    const lines: Array<[Record<string, unknown>, string]> = [];
    const source = new DesiredStateSource({
      etcd: { endpoints: ['http://etcd:2379'] },
      prefix: '/v1',
      hostname: 'hv1',
      watchAttachments: true,
      liveness: () => ({ version: '0', pid: 1, startedAt: 'then', underlay: 'u0', ready: false }),
      log: { ...quiet, debug: (fields, msg) => void lines.push([fields, msg]) },
      clock: recordingClock(),
      createClient: fakeClientFactory(state),
    });
    source.start();
    // Scope attached: the attachments, and the spec and members of the one attached network.
    for (let i = 0; i < 20 && state.watchers.length < 3; i++) await flush();
    expect(state.watchers.map((w) => w.dir)).toEqual(['/v1/hosts/hv1/networks/', '/v1/networks/ff01', '/v1/members/ff01/']);
    state.watchers[1]!.emit('put', { key: Buffer.from('/v1/networks/ff01'), value: Buffer.from('{}'), mod_revision: '5', create_revision: '5' });
    state.watchers[0]!.emit('delete', { key: Buffer.from('/v1/hosts/hv1/networks/64'), value: Buffer.alloc(0), mod_revision: '6', create_revision: '0' });
    expect(lines).toEqual([
      [{ op: 'etcd', revision: 4, networks: 0, attachments: 1, endpoint: 'http://etcd:2379' }, 'etcd list'],
      [{ op: 'etcd', collection: 'networks', vni: 'ff01', revision: 5, deleted: false }, 'etcd change'],
      [{ op: 'etcd', collection: 'attachments', vni: '64', revision: 6, deleted: true }, 'etcd change'],
    ]);
    await source.stop();
  });

  it('hands on the cloud-wide group base when one is set', async () => {
    const state: FakeEtcdState = { revision: 2, kv: new Map([['/v1/settings', '{"groupBase":"ff0e:0::"}']]), failLists: 0, watchers: [], clients: 0 };
    const snapshots: Snapshot[] = [];
    const source = makeSource(state, recordingClock());
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 20 && snapshots.length === 0; i++) await flush();
    await source.stop();
    expect(snapshots[0]!.cloudGroupBase).toBe('ff0e::');
  });

  it("lists with this etcd's data id, and makes one (create-if-absent) where there is none", async () => {
    const state: FakeEtcdState = { revision: 3, kv: new Map(), failLists: 0, watchers: [], clients: 0 };
    const snapshots: Snapshot[] = [];
    let source = makeSource(state, recordingClock());
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 20 && snapshots.length === 0; i++) await flush();
    expect(snapshots[0]!.etcdCluster).toBe('00000000000000ab');
    await source.stop();

    const fresh: FakeEtcdState = { revision: 1, kv: new Map(), failLists: 0, watchers: [], clients: 0, noDataId: true };
    source = makeSource(fresh, recordingClock());
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 20 && snapshots.length === 1; i++) await flush();
    expect(snapshots[1]!.etcdCluster).toMatch(/^[0-9a-f]{16}$/);
    expect(snapshots[1]!.etcdCluster).not.toBe('00000000000000ab');
    expect(JSON.parse(fresh.kv.get('/v1/data-id')!)).toEqual({ id: snapshots[1]!.etcdCluster });
    await source.stop();
  });

  it('any watcher error throws the client away and lists again; backoff starts over after a success', async () => {
    const state: FakeEtcdState = { revision: 10, kv: new Map([['/v1/networks/64', '{}']]), failLists: 0, watchers: [], clients: 0 };
    const clock = recordingClock();
    const source = makeSource(state, clock);
    const snapshots: Snapshot[] = [];
    const changes: Change[] = [];
    const connected: boolean[] = [];
    source.on('snapshot', (s) => snapshots.push(s));
    source.on('change', (c) => changes.push(c));
    source.on('connected', (c) => connected.push(c));
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();

    state.watchers[0]!.emit('put', { key: Buffer.from('/v1/networks/ff01'), value: Buffer.from('{"mtu":1400}'), mod_revision: '11', create_revision: '11' });
    expect(changes).toEqual([{ collection: 'networks', name: 'ff01', revision: 11, value: { value: Buffer.from('{"mtu":1400}'), modRevision: 11, createRevision: 11 } }]);
    expect(source.watchRevision).toBe(11);

    // Compaction or any other watch failure: the network deleted meanwhile must show up in a fresh list.
    state.kv.delete('/v1/networks/64');
    state.revision = 20;
    state.watchers[0]!.emit('error', new Error('etcdserver: mvcc: required revision has been compacted'));
    for (let i = 0; i < 20 && snapshots.length < 2; i++) await flush();
    expect(snapshots).toHaveLength(2);
    expect(snapshots[1]!.networks.size).toBe(0);
    expect(snapshots[1]!.revision).toBe(20);
    expect(state.clients).toBe(2);
    expect(connected).toEqual([true, false, true]);
    expect(clock.sleeps).toEqual([200]);

    state.failLists = 2;
    // The second pass's networks watcher (each pass also watches the members index).
    state.watchers[2]!.emit('disconnected');
    for (let i = 0; i < 30 && snapshots.length < 3; i++) await flush();
    // The first retry after a good run waits the initial delay again.
    expect(clock.sleeps).toEqual([200, 200, 400, 800]);
    expect(snapshots).toHaveLength(3);
    await source.stop();
  });

  it('retires every pass: its watchers cancelled (unless etcd3 dropped them itself), its lease released, its client closed', async () => {
    const state: FakeEtcdState = { revision: 5, kv: new Map(), failLists: 0, watchers: [], clients: 0, failLivenessPuts: 1 };
    // Scope all: two watches a pass (networks, members index).
    const source = makeSource(state, recordingClock(), false);
    const changes: Change[] = [];
    source.on('change', (c) => changes.push(c));
    const settle = async () => {
      for (let i = 0; i < 20; i++) await flush();
    };
    source.start();
    await settle();
    // The first liveness put failed: that lease is released with its client, before any watch.
    expect(state.leases![0]!.released).toBe(true);
    expect(state.closed).toBe(1);
    expect(state.watchers).toHaveLength(2);

    // The stream dropped before etcd confirmed the watches: both are still cancelled.
    state.watchers[0]!.emit('disconnected');
    await settle();
    expect(state.watchers.slice(0, 2).map((w) => w.cancelled)).toEqual([true, true]);
    expect(state.leases![1]!.released).toBe(true);
    expect(state.closed).toBe(2);
    // Retired watchers keep no listener of ours but one for 'error', which would throw without any.
    for (const watcher of state.watchers.slice(0, 2)) {
      expect(['put', 'delete', 'disconnected', 'end', 'error'].map((event) => watcher.listenerCount(event))).toEqual([0, 0, 0, 0, 1]);
    }
    expect(() => state.watchers[1]!.emit('error', new Error('late'))).not.toThrow();
    expect(changes).toEqual([]);

    // etcd cancelled one watch: etcd3 has dropped it (cancelling it again would wait for ever); the other is cancelled.
    state.watchers[3]!.emit('error', new Error('Watcher canceled: etcdserver: mvcc: required revision has been compacted'));
    await settle();
    expect(state.watchers.slice(2, 4).map((w) => w.cancelled)).toEqual([true, false]);
    expect(state.closed).toBe(3);

    await source.stop();
    await settle();
    expect(state.watchers.map((w) => w.cancelled)).toEqual([true, true, true, false, true, true]);
    expect(state.leases!.map((l) => l.released)).toEqual([true, true, true, true]);
    expect(state.closed).toBe(state.clients);
  });

  it('writes statuses in transactions of at most 128 keys, skips rewrites that change only updatedAt, and retries after a backoff', async () => {
    const state: FakeEtcdState = {
      revision: 3,
      kv: new Map([
        ['/v1/hosts/hv1/status/64', stored('64', undefined, 'then')],
        ['/v1/hosts/hv1/status/65', stored('65')],
      ]),
      failLists: 0,
      watchers: [],
      clients: 0,
    };
    const clock = recordingClock();
    const source = makeSource(state, clock);
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();

    source.writeStatus('64', status('64', undefined, 'now'));
    for (let vni = 0x100; vni < 0x100 + 300; vni++) source.writeStatus(vni.toString(16), status(vni.toString(16)));
    source.writeStatus('65', null);
    source.writeStatus('66', null); // never written: nothing to delete
    for (let i = 0; i < 20; i++) await flush();
    // The first write goes out at once; what queues up behind it goes in full transactions.
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 128, 128, 44]);
    expect(state.txns!.flat()).toContain('delete /v1/hosts/hv1/status/65');
    expect(state.txns!.flat()).not.toContain('put /v1/hosts/hv1/status/64');
    expect(state.txns!.flat()).not.toContain('delete /v1/hosts/hv1/status/66');
    expect(state.kv.has('/v1/hosts/hv1/status/65')).toBe(false);
    expect(state.kv.get('/v1/hosts/hv1/status/12b')).toBe(stored('12b'));

    // A transaction etcd could not take goes again after a backoff (see also the tests below).
    state.failTxns = 1;
    source.writeStatus('100', status('100', 'x'));
    for (let i = 0; i < 20; i++) await flush();
    expect(clock.sleeps).toEqual([200]);
    expect(state.kv.get('/v1/hosts/hv1/status/100')).toBe(stored('100', 'x'));

    // What was written is remembered without its time stamp: the same state, stamped later, is not rewritten.
    const transactions = state.txns!.length;
    source.writeStatus('100', status('100', 'x', 'later'));
    source.writeStatus('12b', status('12b', undefined, 'later'));
    for (let i = 0; i < 20; i++) await flush();
    expect(state.txns!.length).toBe(transactions);
    source.writeStatus('12b', status('12b', 'y', 'later'));
    for (let i = 0; i < 20; i++) await flush();
    expect(state.kv.get('/v1/hosts/hv1/status/12b')).toBe(
      '{"state":"error","reason":"y","vxlan":"vxlan12b","bridge":"br12b","updatedAt":"later"}',
    );
    await source.stop();
  });

  it('while coalescing, a status written within 100 ms of the last transaction waits out the rest, with the others that come meanwhile', async () => {
    const state: FakeEtcdState = { revision: 3, kv: new Map(), failLists: 0, watchers: [], clients: 0 };
    let now = 10_000;
    const clock = heldClock(() => now);
    const sleeps = clock.sleeps;
    const source = makeSource(state, clock);
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    source.coalesceStatusWrites(true);
    const settle = async () => {
      for (let i = 0; i < 20; i++) await flush();
    };

    source.writeStatus('64', status('64'));
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1]);

    now += 30;
    source.writeStatus('65', status('65'));
    await settle();
    now += 40;
    source.writeStatus('66', status('66'));
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1]);
    expect(sleeps.map((s) => s.ms)).toEqual([70]);
    now += 30;
    sleeps[0]!.end();
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 2]);

    // Quiet for longer than the window: the next status goes out at once.
    now += 500;
    source.writeStatus('67', status('67'));
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 2, 1]);

    // A full transaction's worth does not wait for the window to end.
    now += 10;
    for (let vni = 0x100; vni < 0x100 + 128; vni++) source.writeStatus(vni.toString(16), status(vni.toString(16)));
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 2, 1, 128]);
    expect(sleeps.map((s) => s.ms)).toEqual([70, 90]);

    // Coalescing off: what waits goes at once, and so does the next status.
    now += 10;
    source.writeStatus('68', status('68'));
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 2, 1, 128]);
    source.coalesceStatusWrites(false);
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 2, 1, 128, 1]);
    now += 10;
    source.writeStatus('69', status('69'));
    await settle();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1, 2, 1, 128, 1, 1]);
    expect(sleeps).toHaveLength(3);
    await source.stop(0);
  });

  it('a status waiting out the window when the source stops is not written by a stopping source', async () => {
    const state: FakeEtcdState = { revision: 3, kv: new Map(), failLists: 0, watchers: [], clients: 0 };
    const clock = heldClock(() => 10_000);
    const source = makeSource(state, clock);
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    source.coalesceStatusWrites(true);
    source.writeStatus('64', status('64'));
    for (let i = 0; i < 20; i++) await flush();
    source.writeStatus('65', status('65'));
    for (let i = 0; i < 20; i++) await flush();
    expect(clock.sleeps.map((sleep) => sleep.ms)).toContain(100);
    await source.stop(0);
    for (let i = 0; i < 20; i++) await flush();
    expect(state.txns!.map((ops) => ops.length)).toEqual([1]);
  });

  it('lists each directory in pages that go on after the last key, every page after the first at the revision the first one saw', async () => {
    const kv = new Map<string, string>();
    for (let vni = 0x100; vni < 0x100 + 1000; vni++) kv.set(`/v1/networks/${vni.toString(16)}`, '{}');
    kv.set('/v1/hosts/hv1/networks/100', '{}');
    kv.set('/v1/hosts/hv1/status/100', stored('100'));
    kv.set('/v1/hosts/hv2/networks/101', '{}');
    const state: FakeEtcdState = { revision: 40, kv, failLists: 0, watchers: [], clients: 0 };
    // Writes while the list is under way must not move it to another revision.
    state.beforeRange = () => void state.revision++;
    const snapshots: Snapshot[] = [];
    const source = makeSource(state, recordingClock());
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 40 && snapshots.length === 0; i++) await flush();

    expect(snapshots[0]!.revision).toBe(41);
    expect([...snapshots[0]!.networks.keys()]).toHaveLength(1000);
    expect([...snapshots[0]!.attachments.keys()]).toEqual(['100']);
    expect([...snapshots[0]!.statuses.keys()]).toEqual(['100']);
    const networkPages = state.ranges!.filter((range) => range.from.startsWith('/v1/networks/'));
    // Pages of 256, 512, then up to 1,024 keys while their replies stay small.
    expect(networkPages.map((range) => range.from)).toEqual(['/v1/networks/', '/v1/networks/1ff\0', '/v1/networks/3ff\0']);
    // networks (3 pages), attachments, statuses, members index: one revision.
    expect(state.ranges!.map((range) => range.revision)).toEqual([undefined, 41, 41, 41, 41, 41]);
    await source.stop();
  });

  it('a page larger than the client accepts (values above etcd\'s default limit) is read again with fewer keys', async () => {
    const kv = new Map<string, string>();
    for (let vni = 0x100; vni < 0x100 + 70; vni++) kv.set(`/v1/networks/${vni.toString(16)}`, vni === 0x120 ? 'x'.repeat(11_000) : '{}');
    const state: FakeEtcdState = { revision: 5, kv, failLists: 0, watchers: [], clients: 0, maxReplyBytes: 12_000 };
    const snapshots: Snapshot[] = [];
    const source = makeSource(state, recordingClock());
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 40 && snapshots.length === 0; i++) await flush();
    expect(snapshots[0]!.networks.size).toBe(70);
    // 256, 128 and 64 keys refused, then 100…11f in a page of 32 and the rest in one of 64, in the same pass.
    expect(state.ranges!.filter((range) => range.from.startsWith('/v1/networks/')).map((range) => range.from)).toEqual([
      '/v1/networks/',
      '/v1/networks/',
      '/v1/networks/',
      '/v1/networks/',
      '/v1/networks/11f\0',
    ]);
    expect(state.clients).toBe(1);
    await source.stop();
  });

  it('a compaction of the revision while the pages are read lists again from the start, at a new revision', async () => {
    const kv = new Map<string, string>();
    for (let vni = 0x100; vni < 0x100 + 300; vni++) kv.set(`/v1/networks/${vni.toString(16)}`, '{}');
    const state: FakeEtcdState = { revision: 10, kv, failLists: 0, watchers: [], clients: 0 };
    state.beforeRange = (n) => {
      if (n !== 2) return;
      state.revision = 30;
      state.compactedBelow = 25;
    };
    const clock = recordingClock();
    const snapshots: Snapshot[] = [];
    const source = makeSource(state, clock);
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 40 && snapshots.length === 0; i++) await flush();

    expect(state.ranges!.slice(0, 4)).toEqual([
      { from: '/v1/networks/', revision: undefined },
      { from: '/v1/networks/1ff\0', revision: 10 },
      { from: '/v1/networks/', revision: undefined },
      { from: '/v1/networks/1ff\0', revision: 30 },
    ]);
    expect(snapshots[0]!.revision).toBe(30);
    expect(snapshots[0]!.networks.size).toBe(300);
    // Within the same pass: no new client, no backoff.
    expect(state.clients).toBe(1);
    expect(clock.sleeps).toEqual([]);
    await source.stop();
  });

  it('a status transaction etcd refuses is split in halves; the one status still refused is logged and dropped, the other 127 are written', async () => {
    const state: FakeEtcdState = { revision: 3, kv: new Map(), failLists: 0, watchers: [], clients: 0 };
    const poisoned = 'put /v1/hosts/hv1/status/1ff';
    state.refuseTxn = (ops) => ops.length > 40 || ops.includes(poisoned);
    const warnings: Array<{ fields: Record<string, unknown>; msg: string }> = [];
    const source = new DesiredStateSource({
      etcd: { endpoints: ['http://etcd:2379'] },
      prefix: '/v1',
      hostname: 'hv1',
      watchAttachments: false,
      liveness: () => ({ version: '0', pid: 1, startedAt: 'then', underlay: 'u0', ready: false }),
      log: { info: () => undefined, warn: (fields, msg) => warnings.push({ fields, msg }) },
      clock: recordingClock(),
      createClient: fakeClientFactory(state),
    });
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    source.coalesceStatusWrites(true);
    const names = Array.from({ length: 128 }, (_, i) => (0x180 + i).toString(16));
    for (const name of names) source.writeStatus(name, status(name, name === '1ff' ? 'x'.repeat(300) : undefined));
    source.coalesceStatusWrites(false);
    for (let i = 0; i < 40; i++) await flush();

    // The first status goes out alone at once; the other 127 wait for one transaction, which is refused.
    // Its halves are split again while refused: 64 → 32 + 32 written; 63 → 32 written + 31 with 1ff → … → 1ff alone.
    expect(state.refused).toEqual([127, 64, 63, 31, 15, 7, 3, 1]);
    for (const name of names) expect(state.kv.has(`/v1/hosts/hv1/status/${name}`)).toBe(name !== '1ff');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.fields).toMatchObject({ vni: '1ff', key: '/v1/hosts/hv1/status/1ff', err: expect.stringContaining('request is too large') });
    expect(String(warnings[0]!.fields.reason).length).toBeLessThan(300);
    expect(String(warnings[0]!.fields.reason)).toContain('cut');

    // Dropped until it changes: the same status is not sent again, a new one is.
    const attempts = state.txns!.length + state.refused!.length;
    source.writeStatus('1ff', status('1ff', 'x'.repeat(300), 'later'));
    for (let i = 0; i < 20; i++) await flush();
    expect(state.txns!.length + state.refused!.length).toBe(attempts);
    state.refuseTxn = undefined;
    source.writeStatus('1ff', status('1ff', 'fixed'));
    for (let i = 0; i < 20; i++) await flush();
    expect(state.kv.get('/v1/hosts/hv1/status/1ff')).toBe(stored('1ff', 'fixed'));
    await source.stop();
  });

  it('a status transaction carries at most ~1 MiB of keys and values, under etcd\'s 1.5 MiB request limit', async () => {
    const state: FakeEtcdState = { revision: 3, kv: new Map(), failLists: 0, watchers: [], clients: 0 };
    const source = makeSource(state, recordingClock());
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    source.coalesceStatusWrites(true);
    for (let vni = 0x100; vni < 0x100 + 100; vni++) source.writeStatus(vni.toString(16), status(vni.toString(16), 'r'.repeat(30_000)));
    source.coalesceStatusWrites(false);
    for (let i = 0; i < 40; i++) await flush();
    expect(state.kv.size).toBe(100);
    expect(state.txns!.flat()).toHaveLength(100);
    expect(state.txnBytes!.length).toBeGreaterThanOrEqual(3);
    for (const bytes of state.txnBytes!) expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    await source.stop();
  });

  it('while etcd cannot take statuses they stay pending, and go again after a capped, doubling backoff', async () => {
    const state: FakeEtcdState = { revision: 3, kv: new Map(), failLists: 0, watchers: [], clients: 0 };
    const clock = heldClock(() => 0);
    const sleeps = clock.sleeps;
    const source = makeSource(state, clock);
    source.start();
    for (let i = 0; i < 20 && state.watchers.length === 0; i++) await flush();
    const settle = async () => {
      for (let i = 0; i < 20; i++) await flush();
    };
    state.failTxns = 2;
    source.writeStatus('64', status('64'));
    source.writeStatus('65', status('65'));
    await settle();
    expect(state.kv.has('/v1/hosts/hv1/status/64')).toBe(false);
    expect(sleeps.map((sleep) => sleep.ms)).toEqual([200]);
    sleeps[0]!.end();
    await settle();
    expect(state.kv.has('/v1/hosts/hv1/status/64')).toBe(false);
    expect(sleeps.map((sleep) => sleep.ms)).toEqual([200, 400]);
    // A status that changes meanwhile waits with the others, in its newest form.
    source.writeStatus('65', status('65', 'changed'));
    sleeps[1]!.end();
    await settle();
    expect(state.kv.get('/v1/hosts/hv1/status/64')).toBe(stored('64'));
    expect(state.kv.get('/v1/hosts/hv1/status/65')).toBe(stored('65', 'changed'));
    expect(state.txns).toHaveLength(1);
    expect(state.refused).toBeUndefined();
    await source.stop(0);
  });
});

describe('DesiredStateSource: the members index', () => {
  const kv = (key: string, value: string, revision = 5) => ({ key: Buffer.from(key), value: Buffer.from(value), mod_revision: String(revision), create_revision: String(revision) });

  it('scope all: lists and watches the whole index; publishes this host where it carries a network, only what differs, and again when someone deletes it', async () => {
    const state: FakeEtcdState = {
      revision: 7,
      kv: new Map([
        ['/v1/networks/64', '{}'],
        ['/v1/members/64/h2', '{"address":"fd00::2"}'],
        ['/v1/members/64/hv1', '{"address":"fd00::1"}'],
      ]),
      failLists: 0,
      watchers: [],
      clients: 0,
    };
    let address = 'fd00::1';
    const source = makeSource(state, recordingClock(), false, undefined, undefined, () => address);
    const snapshots: Snapshot[] = [];
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 20 && state.watchers.length < 2; i++) await flush();
    expect([...snapshots[0]!.members.get('64')!.keys()]).toEqual(['h2', 'hv1']);
    expect(state.watchers.map((w) => w.dir)).toEqual(['/v1/networks/', '/v1/members/']);

    source.publishMembership('64', true);
    source.publishMembership('65', true);
    for (let i = 0; i < 10; i++) await flush();
    expect(state.txns!.flat(), 'the key already in etcd is not written again').toEqual(['put /v1/members/65/hv1']);
    expect(state.kv.get('/v1/members/65/hv1')).toBe('{"address":"fd00::1"}');

    // `vxnetctl host remove --force`, or a hand edit: a running agent that still carries the network puts it back.
    state.watchers[1]!.emit('delete', kv('/v1/members/64/hv1', ''));
    for (let i = 0; i < 10; i++) await flush();
    expect(state.txns!.flat().at(-1)).toBe('put /v1/members/64/hv1');

    address = 'fd00::11';
    source.checkMemberAddress();
    for (let i = 0; i < 10; i++) await flush();
    expect(state.txns!.at(-1)!.sort()).toEqual(['put /v1/members/64/hv1', 'put /v1/members/65/hv1']);
    expect(state.kv.get('/v1/members/64/hv1')).toBe('{"address":"fd00::11"}');

    source.publishMembership('65', false);
    for (let i = 0; i < 10; i++) await flush();
    expect(state.txns!.flat().at(-1)).toBe('delete /v1/members/65/hv1');
    await source.stop();
  });

  it('scope attached: reads and watches the members of attached networks only, from when each was attached', async () => {
    const state: FakeEtcdState = {
      revision: 7,
      kv: new Map([
        ['/v1/networks/64', '{}'],
        ['/v1/networks/65', '{}'],
        ['/v1/hosts/hv1/networks/64', '{}'],
        ['/v1/members/64/h2', '{"address":"fd00::2"}'],
        ['/v1/members/65/h3', '{"address":"fd00::3"}'],
      ]),
      failLists: 0,
      watchers: [],
      clients: 0,
    };
    const replaced: Array<[string, string[] | undefined]> = [];
    const memberChanges: string[] = [];
    const sink: DesiredStateSink = {
      applySnapshot: async () => undefined,
      applyChange: () => undefined,
      applyMemberChange: (change) => memberChanges.push(`${change.hex}/${change.host} ${change.value ? 'put' : 'delete'}`),
      replaceMembers: (hex, hosts) => replaced.push([hex, hosts && [...hosts.keys()]]),
    };
    const source = makeSource(state, recordingClock(), true, sink, undefined, () => 'fd00::1');
    const snapshots: Snapshot[] = [];
    source.on('snapshot', (snapshot) => snapshots.push(snapshot));
    source.start();
    for (let i = 0; i < 20 && state.watchers.length < 3; i++) await flush();
    expect([...snapshots[0]!.members.keys()], 'not the members of 65').toEqual(['64']);
    expect(state.ranges!.map((r) => r.from)).not.toContain('/v1/members/');
    expect(state.watchers.map((w) => [w.dir, w.from])).toEqual([
      ['/v1/hosts/hv1/networks/', '8'],
      ['/v1/networks/64', '8'],
      ['/v1/members/64/', '8'],
    ]);
    // Not the cloud's networks: only the attached one's spec, at the list's revision.
    expect(state.ranges!.map((r) => r.from)).not.toContain('/v1/networks/');
    expect(state.ranges).toContainEqual({ from: '/v1/networks/64', revision: 7 });
    expect([...snapshots[0]!.networks.keys()]).toEqual(['64']);

    // Attached to 65 at revision 12: its members are read at 12 and watched from 13.
    state.watchers[0]!.emit('put', kv('/v1/hosts/hv1/networks/65', '{}', 12));
    for (let i = 0; i < 10 && state.watchers.length < 5; i++) await flush();
    expect(state.ranges!.slice(-2)).toEqual([
      { from: '/v1/networks/65', revision: 12 },
      { from: '/v1/members/65/', revision: 12 },
    ]);
    expect(replaced).toEqual([['65', ['h3']]]);
    expect(state.watchers.slice(3).map((w) => [w.dir, w.from])).toEqual([
      ['/v1/networks/65', '13'],
      ['/v1/members/65/', '13'],
    ]);
    state.watchers[4]!.emit('put', kv('/v1/members/65/h4', '{"address":"fd00::4"}', 14));
    await flush();
    expect(memberChanges).toEqual(['65/h4 put']);

    // Detached: the watcher goes, and so does the agent's copy.
    state.watchers[0]!.emit('delete', kv('/v1/hosts/hv1/networks/65', '', 15));
    for (let i = 0; i < 5; i++) await flush();
    expect(state.watchers.slice(3).map((w) => w.cancelled)).toEqual([true, true]);
    expect(replaced.at(-1)).toEqual(['65', undefined]);
    // Its members key (never read in this pass) is deleted when the agent says so.
    source.publishMembership('65', true);
    source.publishMembership('65', false);
    for (let i = 0; i < 10; i++) await flush();
    expect(state.txns!.flat()).toContain('delete /v1/members/65/hv1');
    await source.stop();
  });
});
