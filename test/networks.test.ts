/** vxnetctl's etcd operations (src/store/networks.ts) against an in-memory KV: quarantine, forced deletes, owners' MTUs, races. */
import { describe, expect, it } from 'vitest';
import { parseGroupBase } from '../src/model/group.js';
import { createNetwork, deleteNetwork, MAX_FORCED_ATTACHMENTS, quarantinePolicy, readSettings, RefusedError, updateSettings } from '../src/store/networks.js';
import { EtcdSchema } from '../src/store/schema.js';
import { FakeEtcdKv } from './support/fake-etcd-kv.js';

const schema = new EtcdSchema('/v1');
const HOUR = 3_600_000;
const NOW = Date.parse('2026-06-01T12:00:00.000Z');
const now = () => NOW;
const base = parseGroupBase('ff05::');
const create = (kv: FakeEtcdKv, request: { vni?: number; mtu?: number; owner?: string; force?: boolean; quarantineMs?: number; keepRecordsMs?: number } = {}) =>
  createNetwork(kv.client(), schema, { quarantineMs: 24 * HOUR, ...request, groupBase: base, now });
const remove = (kv: FakeEtcdKv, vni: number, force = false) => deleteNetwork(kv.client(), schema, vni, { force, quarantineMs: 24 * HOUR, now });
const record = (hoursAgo: number, owner?: string) => JSON.stringify({ deletedAt: new Date(NOW - hoursAgo * HOUR).toISOString(), ...(owner ? { owner } : {}) });

describe('quarantine', () => {
  it('a delete records the VNI in its own transaction; allocation skips it until the quarantine is over', async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { owner: 'a' });
    await remove(kv, 1);
    expect(kv.commits.at(-1)).toEqual([{ delete: '/v1/networks/1' }, { delete: '/v1/members/1/' }, { delete: schema.ownerKey('a') }, { put: '/v1/deleted/1', value: record(0, 'a') }]);
    expect((await create(kv)).network.vni).toBe(3);
    await expect(create(kv, { vni: 1 })).rejects.toThrow(new RefusedError(
      'network 1 (owner "a") was deleted at 2026-06-01T12:00:00.000Z; its VNI is quarantined until 2026-06-02T12:00:00.000Z so that no host still plugged into the old network finds a new one under it; pass --force to use it now',
    ));
    expect((await create(kv, { vni: 1, force: true })).network.vni).toBe(1);
    expect(kv.keys('/v1/deleted/')).toEqual([]);
  });

  it('an expired record frees its VNI; expired records are pruned at most 8 per transaction, never a fresh one', async () => {
    const kv = new FakeEtcdKv();
    for (let vni = 0x100; vni < 0x10c; vni++) kv.put(schema.deletedKey(vni), record(25));
    kv.put(schema.deletedKey(1), record(25));
    kv.put(schema.deletedKey(3), record(23));
    expect((await create(kv)).network.vni).toBe(1);
    const commit = kv.commits.at(-1)!;
    expect(commit.filter((op) => 'delete' in op && op.delete.startsWith('/v1/deleted/'))).toHaveLength(1 + 8);
    expect(kv.keys('/v1/deleted/')).toHaveLength(12 - 8 + 1);
    expect(kv.get(schema.deletedKey(3))).toBe(record(23));
    expect((await create(kv)).network.vni).toBe(4);
    expect(kv.keys('/v1/deleted/')).toEqual([schema.deletedKey(3)]);
  });

  it('records are read in pages, so that any number of them is honoured', async () => {
    const kv = new FakeEtcdKv();
    for (let vni = 1; vni <= 600; vni++) kv.put(schema.deletedKey(vni), record(1));
    expect((await create(kv)).network.vni).toBe(601);
    const pages = kv.ranges.filter((range) => range.from.startsWith(schema.deletedDir));
    expect(pages.length).toBeGreaterThan(1);
    expect(pages.every((page) => page.limit > 0 && page.limit < 600)).toBe(true);
  });

  it('a shorter quarantine for one command hands out a VNI sooner but never prunes a record the cloud-wide one still honours', async () => {
    const kv = new FakeEtcdKv();
    kv.put(schema.deletedKey(1), record(2));
    kv.put(schema.deletedKey(3), record(30));
    const policy = quarantinePolicy({ quarantineSeconds: 24 * 3600 }, 1 * HOUR);
    expect(policy).toEqual({ quarantineMs: 1 * HOUR, keepRecordsMs: 24 * HOUR });
    expect((await create(kv, policy)).network.vni).toBe(1);
    // 1's record went with the network made under it; 3's (older than 24 h) was pruned.
    expect(kv.keys(schema.deletedDir)).toEqual([]);
    kv.put(schema.deletedKey(4), record(2));
    expect((await create(kv, policy)).network.vni).toBe(3);
    expect(kv.get(schema.deletedKey(4))).toBe(record(2));
  });

  it('the cloud-wide quarantine is the default, 24 h while none is set; an override of it counts for one command', () => {
    expect(quarantinePolicy({})).toEqual({ quarantineMs: 24 * HOUR, keepRecordsMs: 24 * HOUR });
    expect(quarantinePolicy({ quarantineSeconds: 48 * 3600 })).toEqual({ quarantineMs: 48 * HOUR, keepRecordsMs: 48 * HOUR });
    expect(quarantinePolicy({ quarantineSeconds: 48 * 3600 }, 72 * HOUR)).toEqual({ quarantineMs: 72 * HOUR, keepRecordsMs: 72 * HOUR });
  });

  it('a VNI deleted by another vxnetctl between our read and our commit is not handed out: the commit fails, the next attempt skips it', async () => {
    const kv = new FakeEtcdKv();
    let raced = false;
    kv.beforeCommit = () => {
      if (raced) return;
      raced = true;
      // Another client created network 1 and deleted it again, with its record: the network key is absent once more.
      kv.put(schema.networkKey(1), '{}');
      kv.delete(schema.networkKey(1));
      kv.put(schema.deletedKey(1), record(0));
    };
    expect((await create(kv)).network.vni).toBe(3);
  });
});

describe('delete with hosts attached', () => {
  it('is refused, naming the hosts; forced, deletes network, attachments and owner index and writes the record in one transaction', async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { vni: 0xa, owner: 'o' });
    kv.put(schema.attachmentKey('hv-2', 0xa), '{}');
    kv.put(schema.attachmentKey('hv-1', 0xa), '{}');
    kv.put(schema.attachmentKey('hv-1', 0xb), '{}');
    await expect(remove(kv, 0xa)).rejects.toThrow(/^hosts hv-1, hv-2 are still attached to network a; detach them first/);
    expect(kv.get(schema.networkKey(0xa))).toBeDefined();

    const commits = kv.commits.length;
    expect(await remove(kv, 0xa, true)).toEqual({ detached: ['hv-1', 'hv-2'] });
    expect(kv.commits.length).toBe(commits + 1);
    expect(kv.keys()).toEqual([schema.deletedKey(0xa), schema.attachmentKey('hv-1', 0xb)]);
  });

  it('an attachment rewritten between the read and the commit makes it read again', async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { vni: 0xa });
    kv.put(schema.attachmentKey('hv-1', 0xa), '{}');
    let raced = false;
    kv.beforeCommit = () => {
      if (!raced) kv.put(schema.attachmentKey('hv-1', 0xa), '{"vm":"x"}');
      raced = true;
    };
    await remove(kv, 0xa, true);
    expect(kv.keys('/v1/hosts/')).toEqual([]);
  });

  it(`refuses a forced delete of more attachments than one transaction holds (${MAX_FORCED_ATTACHMENTS})`, async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { vni: 0xa });
    for (let host = 0; host <= MAX_FORCED_ATTACHMENTS; host++) kv.put(schema.attachmentKey(`hv-${host}`, 0xa), '{}');
    await expect(remove(kv, 0xa, true)).rejects.toThrow(new RefusedError(
      `${MAX_FORCED_ATTACHMENTS + 1} hosts are attached to network a, more than one etcd transaction can detach with it (${MAX_FORCED_ATTACHMENTS}); detach some with vxnetctl host detach HOST a, then delete it`,
    ));
    kv.delete(schema.attachmentKey('hv-0', 0xa));
    expect((await remove(kv, 0xa, true)).detached).toHaveLength(MAX_FORCED_ATTACHMENTS);
  });
});

describe('delete racing a host that attaches', () => {
  it('an attachment created between the read and the commit is seen: refused without --force, deleted with it', async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { vni: 0xa });
    kv.put(schema.attachmentKey('hv-1', 0xa), '{}');
    let raced = false;
    kv.beforeCommit = () => {
      if (!raced) kv.put(schema.attachmentKey('hv-2', 0xa), '{}');
      raced = true;
    };
    expect(await remove(kv, 0xa, true)).toEqual({ detached: ['hv-1', 'hv-2'] });
    expect(kv.keys('/v1/hosts/')).toEqual([]);

    await create(kv, { vni: 0xb, force: true });
    raced = false;
    kv.beforeCommit = () => {
      if (!raced) kv.put(schema.attachmentKey('hv-3', 0xb), '{}');
      raced = true;
    };
    await expect(remove(kv, 0xb)).rejects.toThrow(/^hosts hv-3 are still attached to network b/);
    expect(kv.get(schema.networkKey(0xb))).toBeDefined();
  });

  it('keys created meanwhile that attach no host to the network (statuses, liveness, other networks) cost a commit, not a new read', async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { vni: 0xa });
    kv.put(schema.attachmentKey('hv-1', 0xa), '{}');
    let races = 0;
    kv.beforeCommit = () => {
      if (races >= 3) return;
      races++;
      kv.put(schema.statusKey('hv-1', 0xa), '{}');
      kv.put(schema.agentKey(`hv-${races + 10}`), '{}');
      kv.put(schema.attachmentKey('hv-2', 0xb), '{}');
    };
    const reads = kv.ranges.length;
    expect(await remove(kv, 0xa, true)).toEqual({ detached: ['hv-1'] });
    expect(races).toBe(3);
    // One read of the hosts' directory (and one of the records) for four commits.
    expect(kv.ranges.slice(reads).map((range) => range.from)).toEqual([schema.hostsDir, schema.deletedDir]);
    expect(kv.keys(schema.attachmentsDir('hv-1'))).toEqual([]);
    expect(kv.get(schema.attachmentKey('hv-2', 0xb))).toBe('{}');
  });
});

describe('cloud-wide settings', () => {
  it('each setting is changed on its own; the others, known or not, are kept', async () => {
    const kv = new FakeEtcdKv();
    kv.put(schema.settingsKey, '{"groupBase":"ff05::","later":true}');
    expect(await updateSettings(kv.client(), schema, { quarantineSeconds: 48 * 3600 })).toEqual({ groupBase: 'ff05::', later: true, quarantineSeconds: 172800 });
    expect(await updateSettings(kv.client(), schema, { groupBase: parseGroupBase('ff15::') })).toEqual({ groupBase: 'ff15::', later: true, quarantineSeconds: 172800 });
    expect(await readSettings(kv.client(), schema)).toEqual({ groupBase: 'ff15::', later: true, quarantineSeconds: 172800 });
    await expect(updateSettings(kv.client(), schema, { quarantineSeconds: 60 })).rejects.toThrow(/not between 1h and 8760h/);
  });
});

describe('owner and MTU', () => {
  it("refuses an MTU other than the owner's network's; the same MTU or none returns it", async () => {
    const kv = new FakeEtcdKv();
    await create(kv, { owner: 'o', mtu: 1400 });
    expect(await create(kv, { owner: 'o', mtu: 1400 })).toMatchObject({ created: false, network: { vni: 1 } });
    expect(await create(kv, { owner: 'o' })).toMatchObject({ created: false, network: { vni: 1 } });
    await expect(create(kv, { owner: 'o', mtu: 9000 })).rejects.toThrow(
      new RefusedError('owner "o" already has network 1 with MTU 1400, not 9000; omit --mtu to get that network, or use another owner'),
    );
  });
});
