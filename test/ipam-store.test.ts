/** IPAM's etcd operations (src/store/ipam.ts) and network delete with IPAM, against an in-memory KV: transactions and races. */
import type { Etcd3 } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { parseGroupBase } from '../src/model/group.js';
import { parsePool, parseSubnet } from '../src/model/ipv6-prefix.js';
import {
  createIpam,
  deleteIpam,
  listIpam,
  readIpamStatus,
  setIpamPool,
  waitForIpam,
  NotAvailableError,
} from '../src/store/ipam.js';
import { ConflictError, createNetwork, deleteNetwork, MAX_FORCED_ATTACHMENTS, NotFoundError, RefusedError } from '../src/store/networks.js';
import { EtcdSchema } from '../src/store/schema.js';
import { FakeEtcdKv } from './support/fake-etcd-kv.js';

const schema = new EtcdSchema('/v1');
const NOW = Date.parse('2026-12-01T12:00:00.000Z');
const now = () => NOW;

/** The fake KV plus what IPAM needs beyond networks: the revision in a transaction's reply. */
function ipamClient(kv: FakeEtcdKv): Etcd3 {
  const client = kv.client() as unknown as Record<string, any>;
  const originalIf = client.if;
  client.if = (...args: unknown[]) => {
    const builder = originalIf(...args);
    const commit = builder.commit;
    builder.commit = async () => ({ ...(await commit()), header: { revision: String(kv.revision) } });
    return builder;
  };
  return client as unknown as Etcd3;
}

async function cloud(pool = '2001:db8:100::/48', networks: number[] = [1, 3, 4, 5]) {
  const kv = new FakeEtcdKv();
  const client = ipamClient(kv);
  await setIpamPool(client, schema, parsePool(pool));
  for (const vni of networks) await createNetwork(client, schema, { vni, groupBase: parseGroupBase('ff05::'), quarantineMs: 3_600_000, now });
  return { kv, client };
}

const create = (client: Etcd3, vni: number, request: { subnet?: string; dns?: string[] } = {}) =>
  createIpam(client, schema, { vni, dns: request.dns ?? [], ...(request.subnet ? { subnet: parseSubnet(request.subnet) } : {}), now });

describe('ipam create', () => {
  it('writes the entry and its index in one transaction, at the lowest free /64', async () => {
    const { kv, client } = await cloud();
    const record = await create(client, 1, { dns: ['2001:db8::53'] });
    expect(record).toEqual({
      vni: 1,
      hex: '1',
      entry: { prefix: '2001:db8:100::/64', dns: ['2001:db8::53'], createdAt: '2026-12-01T12:00:00.000Z' },
      revision: kv.revision,
    });
    expect(kv.commits.at(-1)).toEqual([
      { put: '/v1/ipam/1', value: '{"prefix":"2001:db8:100::/64","dns":["2001:db8::53"],"createdAt":"2026-12-01T12:00:00.000Z"}' },
      { put: '/v1/ipam-prefixes/2001:db8:100::', value: '1' },
    ]);
    expect(kv.entries.get('/v1/ipam/1')!.modRevision).toBe(record.revision);
  });

  it('fills holes left by deletes and skips explicit prefixes and /64s held by an entry without index', async () => {
    const { kv, client } = await cloud();
    await create(client, 1);
    await create(client, 3, { subnet: '2001:db8:100:2::/64' });
    await create(client, 4);
    expect((await create(client, 5)).entry.prefix).toBe('2001:db8:100:3::/64');
    await deleteIpam(client, schema, 1);
    expect(kv.keys('/v1/ipam-prefixes/')).not.toContain('/v1/ipam-prefixes/2001:db8:100::');
    // Written by hand, without its index: its /64 is still held.
    kv.put('/v1/ipam/ff', '{"prefix":"2001:db8:100::/64","createdAt":"2026-12-01T00:00:00Z"}');
    await deleteIpam(client, schema, 4);
    expect((await create(client, 1)).entry.prefix).toBe('2001:db8:100:1::/64');
  });

  it('a /64 taken by another creator between the read and the commit makes it read again and take the next', async () => {
    const { kv, client } = await cloud();
    let raced = false;
    kv.beforeCommit = () => {
      if (raced) return;
      raced = true;
      kv.put('/v1/ipam/3', '{"prefix":"2001:db8:100::/64","dns":[],"createdAt":"2026-12-01T00:00:00Z"}');
      kv.put('/v1/ipam-prefixes/2001:db8:100::', '3');
    };
    expect((await create(client, 1)).entry.prefix).toBe('2001:db8:100:1::/64');
  });

  it('a pool changed between the read and the commit makes it read again', async () => {
    const { kv, client } = await cloud();
    let raced = false;
    kv.beforeCommit = () => {
      if (raced) return;
      raced = true;
      kv.put(schema.ipamPoolKey, '{"prefix":"2001:db8:200::/48"}');
    };
    expect((await create(client, 1)).entry.prefix).toBe('2001:db8:200::/64');
  });

  it('never writes an entry its own parser would refuse (name servers not checked by the caller)', async () => {
    const { kv, client } = await cloud();
    await expect(createIpam(client, schema, { vni: 1, dns: ['ff02::1'], now })).rejects.toThrow(
      new RangeError('name server ff02::1 is not a unicast address a VM can reach: it overlaps the multicast range ff00::/8'),
    );
    expect(kv.keys('/v1/ipam/')).toEqual([]);
  });

  it('a network deleted between the read and the commit is not given IPAM', async () => {
    const { kv, client } = await cloud();
    kv.beforeCommit = () => kv.delete(schema.networkKey(1));
    await expect(create(client, 1)).rejects.toThrow(NotFoundError);
    expect(kv.keys('/v1/ipam')).toEqual(['/v1/ipam-pool']);
  });

  it('refuses, writing nothing: no network, IPAM already there, no pool, outside the pool, taken, exhausted', async () => {
    const { kv, client } = await cloud('2001:db8:100:4::/63');
    await expect(create(client, 7)).rejects.toThrow(new NotFoundError('network 7 does not exist; create it first (vxnetctl network create), then its IPAM'));
    await create(client, 1);
    await expect(create(client, 1)).rejects.toThrow(
      new ConflictError('network 1 already has IPAM: prefix 2001:db8:100:4::/64 (vxnetctl ipam get 1); delete it first to give it another'),
    );
    await expect(create(client, 3, { subnet: '2001:db8:100:6::/64' })).rejects.toThrow(
      new RefusedError('2001:db8:100:6::/64 is outside the IPAM pool 2001:db8:100:4::/63; choose a /64 inside it, or omit --ipv6-prefix to get the lowest free one'),
    );
    await expect(create(client, 3, { subnet: '2001:db8:100:4::/64' })).rejects.toThrow(
      new ConflictError('2001:db8:100:4::/64 is already allocated to network 1; choose another, or omit --ipv6-prefix'),
    );
    await create(client, 3);
    await expect(create(client, 4)).rejects.toThrow(
      new ConflictError('the IPAM pool 2001:db8:100:4::/63 is exhausted: every /64 is allocated; widen it with vxnetctl ipam pool set'),
    );
    const commits = kv.commits.length;
    kv.delete(schema.ipamPoolKey);
    await expect(create(client, 4)).rejects.toThrow(
      new RefusedError('no IPAM pool is set: set the cloud-wide one first, e.g. vxnetctl ipam pool set 2001:db8:100::/48'),
    );
    expect(kv.commits.length).toBe(commits);
  });
});

describe('ipam pool set', () => {
  it('refuses a pool that would leave allocated /64s outside, naming them; a pool that contains them is taken', async () => {
    const { kv, client } = await cloud();
    await create(client, 1);
    await create(client, 3, { subnet: '2001:db8:100:ff00::/64' });
    await expect(setIpamPool(client, schema, parsePool('2001:db8:100::/56'))).rejects.toThrow(
      new RefusedError(
        '1 allocated prefix would lie outside 2001:db8:100::/56: 2001:db8:100:ff00::/64 (network 3); choose a pool that contains it, or delete its IPAM first (vxnetctl ipam delete HEX)',
      ),
    );
    expect(kv.get(schema.ipamPoolKey)).toBe('{"prefix":"2001:db8:100::/48"}');
    expect(await setIpamPool(client, schema, parsePool('2001:db8::/32'))).toEqual({ pool: '2001:db8::/32', previous: '2001:db8:100::/48' });
  });

  it('an allocation committed between its read and its commit makes it read again (and refuse)', async () => {
    const { kv, client } = await cloud();
    let raced = false;
    kv.beforeCommit = () => {
      if (raced) return;
      raced = true;
      kv.put('/v1/ipam/3', '{"prefix":"2001:db8:100:ff00::/64","dns":[],"createdAt":"2026-12-01T00:00:00Z"}');
      kv.put('/v1/ipam-prefixes/2001:db8:100:ff00::', '3');
    };
    await expect(setIpamPool(client, schema, parsePool('2001:db8:100::/56'))).rejects.toThrow(RefusedError);
    expect(kv.get(schema.ipamPoolKey)).toBe('{"prefix":"2001:db8:100::/48"}');
  });
});

describe('ipam delete and list', () => {
  it('deletes entry and index in one transaction; the network stays', async () => {
    const { kv, client } = await cloud();
    await create(client, 1);
    expect(await deleteIpam(client, schema, 1)).toEqual({ prefix: '2001:db8:100::/64' });
    expect(kv.commits.at(-1)).toEqual([{ delete: '/v1/ipam/1' }, { delete: '/v1/ipam-prefixes/2001:db8:100::' }]);
    expect(kv.get(schema.networkKey(1))).toBeDefined();
    await expect(deleteIpam(client, schema, 1)).rejects.toThrow(new NotFoundError('network 1 has no IPAM entry'));
  });

  it('deletes an entry that does not parse; leaves an index key naming another network', async () => {
    const { kv, client } = await cloud();
    kv.put('/v1/ipam/1', '{"prefix":"2001:db8:100::/64","dns":[],"createdAt":"2026-12-01T00:00:00Z"}');
    kv.put('/v1/ipam-prefixes/2001:db8:100::', '3');
    expect(await deleteIpam(client, schema, 1)).toEqual({ prefix: '2001:db8:100::/64' });
    expect(kv.commits.at(-1)).toEqual([{ delete: '/v1/ipam/1' }]);
    kv.put('/v1/ipam/4', 'not json');
    expect(await deleteIpam(client, schema, 4)).toEqual({});
  });

  it('lists entries by VNI and reports invalid keys, bad values and index keys without their entry', async () => {
    const { kv, client } = await cloud();
    await create(client, 5);
    await create(client, 1);
    kv.put('/v1/ipam/FF', '{}');
    kv.put('/v1/ipam/3', '{"prefix":"2001:db8:100::/48"}');
    kv.put('/v1/ipam-prefixes/2001:db8:100:9::', '4');
    const { entries, invalid } = await listIpam(client, schema);
    expect(entries.map(({ hex, entry }) => [hex, entry.prefix])).toEqual([
      ['1', '2001:db8:100:1::/64'],
      ['5', '2001:db8:100::/64'],
    ]);
    expect(invalid.map(({ key }) => key)).toEqual(['/v1/ipam/3', '/v1/ipam/FF', '/v1/ipam-prefixes/2001:db8:100:9::']);
    expect(invalid[2]!.reason).toBe(
      'index of 2001:db8:100:9::/64 names network 4, which has no IPAM entry with that prefix: the /64 stays held until the key is deleted (etcdctl del /v1/ipam-prefixes/2001:db8:100:9::)',
    );
    // It stays held.
    await expect(create(client, 4, { subnet: '2001:db8:100:9::/64' })).rejects.toThrow('2001:db8:100:9::/64 is already allocated to network 4');
  });
});

describe('network delete of a network with IPAM', () => {
  const remove = (client: Etcd3, vni: number, force = false) => deleteNetwork(client, schema, vni, { force, quarantineMs: 3_600_000, now });

  it('is refused without --force; with it, entry and index go in the network\'s transaction', async () => {
    const { kv, client } = await cloud();
    await create(client, 1);
    await expect(remove(client, 1)).rejects.toThrow(
      new RefusedError('network 1 has IPAM (prefix 2001:db8:100::/64); delete it first (vxnetctl ipam delete 1), or pass --force to delete it with the network'),
    );
    expect(await remove(client, 1, true)).toEqual({ detached: [], ipamPrefix: '2001:db8:100::/64' });
    expect(kv.commits.at(-1)).toEqual([
      { delete: '/v1/networks/1' },
      { delete: '/v1/ipam/1' },
      { delete: '/v1/ipam-prefixes/2001:db8:100::' },
      // The network's members index (a range).
      { delete: '/v1/members/1/' },
      { put: '/v1/deleted/1', value: '{"deletedAt":"2026-12-01T12:00:00.000Z"}' },
    ]);
    // Its /64 is free again.
    expect((await create(client, 3)).entry.prefix).toBe('2001:db8:100::/64');
  });

  it('a network without IPAM is deleted as before', async () => {
    const { kv, client } = await cloud();
    expect(await remove(client, 1)).toEqual({ detached: [] });
    expect(kv.commits.at(-1)).toEqual([{ delete: '/v1/networks/1' }, { delete: '/v1/members/1/' }, { put: '/v1/deleted/1', value: '{"deletedAt":"2026-12-01T12:00:00.000Z"}' }]);
  });

  it('IPAM created between its read and its commit makes it read again, and refuse', async () => {
    const { kv, client } = await cloud();
    let raced = false;
    kv.beforeCommit = () => {
      if (raced) return;
      raced = true;
      kv.put('/v1/ipam/1', '{"prefix":"2001:db8:100::/64","dns":[],"createdAt":"2026-12-01T00:00:00Z"}');
    };
    await expect(remove(client, 1)).rejects.toThrow(RefusedError);
    expect(kv.get(schema.networkKey(1))).toBeDefined();
  });

  it('with IPAM, two fewer attachments fit in the forced delete\'s transaction', async () => {
    const { kv, client } = await cloud();
    await create(client, 1);
    for (let i = 0; i < MAX_FORCED_ATTACHMENTS - 1; i++) kv.put(schema.attachmentKey(`hv-${i}`, 1), '{}');
    await expect(remove(client, 1, true)).rejects.toThrow(
      `${MAX_FORCED_ATTACHMENTS - 1} hosts are attached to network 1, more than one etcd transaction can detach with it (${MAX_FORCED_ATTACHMENTS - 2})`,
    );
  });
});

describe('availability', () => {
  const liveness = (role?: string) => JSON.stringify({ version: '0.1.0', pid: 1, startedAt: '2026-12-01T00:00:00Z', underlay: 'u0', ready: true, ...(role ? { role } : {}) });
  const status = (ipam?: object) => JSON.stringify({ state: 'ready', vxlan: 'vxlan1', bridge: 'br1', updatedAt: '2026-12-01T00:00:00Z', ...(ipam ? { ipam } : {}) });

  it('counts live routers only, and waits for those not on the current revision', async () => {
    const { kv, client } = await cloud();
    const { revision, entry } = await create(client, 1);
    kv.put(schema.agentKey('hv-1'), liveness());
    kv.put(schema.agentKey('r1'), liveness('router'));
    kv.put(schema.agentKey('r2'), liveness('router'));
    // r3 is not live: its status stays, its liveness lease is gone.
    kv.put(schema.statusKey('r3', 1), status({ revision: revision - 1, prefix: entry.prefix }));
    kv.put(schema.statusKey('r1', 1), status({ revision, prefix: entry.prefix }));
    expect((await readIpamStatus(client, schema, 1)).availability).toEqual({
      available: false,
      routers: [
        { host: 'r1', serving: true },
        { host: 'r2', serving: false, reason: 'has not reported on this IPAM entry yet' },
      ],
      waitingFor: ['r2'],
    });
    let clock = 0;
    const sleep = async (ms: number) => void (clock += ms);
    await expect(waitForIpam(client, schema, 1, { timeoutMs: 1000, intervalMs: 500, now: () => clock, sleep, watchChanges: null })).rejects.toThrow(
      new NotAvailableError('IPAM of network 1 is not available after 1 s: waiting for r2 (has not reported on this IPAM entry yet)'),
    );
    kv.put(schema.statusKey('r2', 1), status({ revision, prefix: entry.prefix }));
    expect((await readIpamStatus(client, schema, 1)).availability.available).toBe(true);
  });

  it('wait reads until every router reports, then returns', async () => {
    const { kv, client } = await cloud();
    const { revision, entry } = await create(client, 1);
    kv.put(schema.agentKey('r1'), liveness('router'));
    let clock = 0;
    const sleeps: number[] = [];
    const result = await waitForIpam(client, schema, 1, {
      timeoutMs: 10_000,
      intervalMs: 500,
      watchChanges: null,
      now: () => clock,
      sleep: async (ms) => {
        sleeps.push(ms);
        clock += ms;
        if (clock >= 1500) kv.put(schema.statusKey('r1', 1), status({ revision, prefix: entry.prefix }));
      },
    });
    expect(result.availability.available).toBe(true);
    expect(sleeps).toEqual([500, 500, 500]);
  });

  it('a change the watch reports wakes the wait at once; the watch is stopped when it returns', async () => {
    const { kv, client } = await cloud();
    const { revision, entry } = await create(client, 1);
    kv.put(schema.agentKey('r1'), liveness('router'));
    let notify: (() => void) | undefined;
    let stopped = false;
    const started = Date.now();
    const waiting = waitForIpam(client, schema, 1, {
      timeoutMs: 120_000,
      intervalMs: 60_000,
      watchChanges: async (onChange) => {
        notify = onChange;
        return async () => void (stopped = true);
      },
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    kv.put(schema.statusKey('r1', 1), status({ revision, prefix: entry.prefix }));
    notify!();
    expect((await waiting).availability.available).toBe(true);
    expect(Date.now() - started).toBeLessThan(5_000);
    expect(stopped).toBe(true);
  });

  it('a network without IPAM, or none at all, is not found', async () => {
    const { client } = await cloud();
    await expect(readIpamStatus(client, schema, 1)).rejects.toThrow(new NotFoundError('network 1 has no IPAM (a layer-2 network); give it a prefix with vxnetctl ipam create 1'));
    await expect(readIpamStatus(client, schema, 7)).rejects.toThrow(new NotFoundError('network 7 does not exist'));
  });
});
