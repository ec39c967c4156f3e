/**
 * vxnetctl against a real etcd on loopback: atomic VNI allocation under
 * concurrency, owner idempotency, exit codes and the host/status commands.
 * Needs no root and no namespaces; the CLI is run as built (npx tsc -p .).
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createEtcdClient } from '../src/store/client.js';
import { deleteNetwork } from '../src/store/networks.js';
import { EtcdSchema } from '../src/store/schema.js';
import { freePort, startLoopbackEtcd, type LoopbackEtcd } from './harness/loopback-etcd.js';
import { runCommand, type CommandResult, type TrackedProcess } from './harness/processes.js';
import { base64, readRaw as readRawKeys } from './harness/etcd-gateway.js';

const CLI = fileURLToPath(new URL('../dist/cli/vxnetctl.js', import.meta.url));

/** The lowest VNIs whose ff05:: group is not reserved: 2 (all-routers) and c (SSDP) are skipped. */
const FIRST_SIXTEEN_VNIS = [0x1, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xa, 0xb, 0xd, 0xe, 0xf, 0x10, 0x11, 0x12];

let loopbackEtcd: LoopbackEtcd | undefined;
let etcd: TrackedProcess | undefined;
let etcdUrl: string;
let prefixCount = 0;

/** A fresh key prefix, so every test sees an empty data model. */
function freshPrefix(): string {
  return `/test${++prefixCount}`;
}

/** Writes a raw key through etcd's JSON gateway, as another tool (or an agent) would. */
function putRaw(key: string, value: string): Promise<void> {
  return callGateway('put', { key: base64(key), value: base64(value) });
}

function deleteRaw(key: string): Promise<void> {
  return callGateway('deleterange', { key: base64(key) });
}


const readRaw = (prefix: string) => readRawKeys(etcdUrl, prefix);


async function callGateway(operation: string, body: object): Promise<void> {
  const response = await fetch(`${etcdUrl}/v3/kv/${operation}`, { method: 'POST', body: JSON.stringify(body) });
  expect(response.ok, `etcd ${operation}: ${await response.text()}`).toBe(true);
}

/** Runs vxnetctl with only the given VXNETD_* settings (none inherited from the caller). */
function vxnetctl(prefix: string, args: string[], settings: Record<string, string> = {}): Promise<CommandResult> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('VXNETD_')));
  return runCommand([process.execPath, CLI, ...args], {
    timeoutMs: 20_000,
    env: { ...env, VXNETD_ETCD_ENDPOINTS: etcdUrl, VXNETD_PREFIX: prefix, ...settings },
  });
}

/** Runs vxnetctl, expects success, and parses its JSON output. */
async function vxnetctlJson<T>(prefix: string, args: string[]): Promise<T> {
  const result = await vxnetctl(prefix, args);
  expect(result, `vxnetctl ${args.join(' ')}`).toMatchObject({ code: 0, stderr: '' });
  return JSON.parse(result.stdout) as T;
}

interface CreatedNetwork {
  vni: string;
  id: number;
  mtu: number | null;
  owner: string | null;
  description: string | null;
  created: boolean;
}

/** A failure is one line on stderr, prefixed with the program name. */
function expectOneErrorLine(result: CommandResult, code: number, pattern: RegExp): void {
  expect(result.code, result.stderr).toBe(code);
  expect(result.stdout).toBe('');
  expect(result.stderr).toMatch(/^vxnetctl: [^\n]+\n$/);
  expect(result.stderr).toMatch(pattern);
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with npx tsc -p .`);
  loopbackEtcd = await startLoopbackEtcd();
  etcd = loopbackEtcd.process;
  etcdUrl = loopbackEtcd.url;
});

afterAll(async () => {
  await loopbackEtcd?.destroy();
});

describe('vxnetctl network create', () => {
  it('gives 16 concurrent creators 16 distinct VNIs, lowest first, skipping reserved groups', async () => {
    const prefix = freshPrefix();
    const results = await Promise.all(
      Array.from({ length: 16 }, () => vxnetctlJson<CreatedNetwork>(prefix, ['network', 'create'])),
    );
    expect(results.every((network) => network.created)).toBe(true);
    expect(results.map((network) => network.id).sort((a, b) => a - b)).toEqual(FIRST_SIXTEEN_VNIS);
    for (const network of results) expect(network.vni).toBe(network.id.toString(16));

    const listed = await vxnetctlJson<{ id: number }[]>(prefix, ['network', 'list', '--json']);
    expect(listed.map((network) => network.id)).toEqual(FIRST_SIXTEEN_VNIS);
  });

  it('prints the created network as JSON with every field', async () => {
    const prefix = freshPrefix();
    const result = await vxnetctl(prefix, ['network', 'create', '--mtu', '1400', '--owner', 'o', '--description', 'd']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toBe('{"vni":"1","id":1,"mtu":1400,"owner":"o","description":"d","created":true}\n');
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toEqual({
      vni: '3',
      id: 3,
      mtu: null,
      owner: null,
      description: null,
      created: true,
    });
  });

  it('returns the existing network for the same owner, also to 8 concurrent callers', async () => {
    const prefix = freshPrefix();
    const first = await vxnetctlJson<CreatedNetwork>(prefix, ['network', 'create', '--owner', 'customer-1']);
    const second = await vxnetctlJson<CreatedNetwork>(prefix, ['network', 'create', '--owner', 'customer-1']);
    expect(first).toMatchObject({ vni: '1', owner: 'customer-1', created: true });
    expect(second).toEqual({ ...first, created: false });

    const concurrent = await Promise.all(
      Array.from({ length: 8 }, () => vxnetctlJson<CreatedNetwork>(prefix, ['network', 'create', '--owner', 'customer-2'])),
    );
    expect(new Set(concurrent.map((network) => network.vni)).size).toBe(1);
    expect(concurrent.filter((network) => network.created)).toHaveLength(1);

    const listed = await vxnetctlJson<{ vni: string; owner: string }[]>(prefix, ['network', 'list', '--json']);
    expect(listed.map(({ vni, owner }) => [vni, owner])).toEqual([
      ['1', 'customer-1'],
      [concurrent[0]!.vni, 'customer-2'],
    ]);
  });

  it('recognises an owner network written by another tool, and refuses a different --vni for an owner', async () => {
    const prefix = freshPrefix();
    await putRaw(`${prefix}/networks/64`, '{"type":"vxlan","owner":"legacy"}');
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'legacy'])).toMatchObject({ vni: '64', created: false });
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'legacy', '--vni', '64'])).toMatchObject({ created: false });
    expectOneErrorLine(
      await vxnetctl(prefix, ['network', 'create', '--owner', 'legacy', '--vni', '65']),
      1,
      /owner "legacy" already has network 64, not 65/,
    );
  });

  it('gives an owner a new network after its old one was deleted, also by another tool', async () => {
    const prefix = freshPrefix();
    await vxnetctlJson(prefix, ['network', 'create', '--vni', 'a', '--owner', 'again']);
    expect(await vxnetctl(prefix, ['network', 'delete', 'a'])).toMatchObject({ code: 0, stdout: 'deleted network a\n' });
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'again'])).toMatchObject({ vni: '1', created: true });

    // Deleted or re-owned behind vxnetctl's back: the owner index is stale and gets replaced.
    await deleteRaw(`${prefix}/networks/1`);
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'again'])).toMatchObject({ vni: '1', created: true });
    await putRaw(`${prefix}/networks/1`, '{"owner":"someone-else"}');
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'again'])).toMatchObject({ vni: '3', created: true });
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'again'])).toMatchObject({ vni: '3', created: false });
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'someone-else'])).toMatchObject({ vni: '1', created: false });
  });

  it('creates an explicit VNI once and refuses it the second time', async () => {
    const prefix = freshPrefix();
    expect(await vxnetctlJson(prefix, ['network', 'create', '--vni', 'ff01'])).toMatchObject({ vni: 'ff01', id: 0xff01, created: true });
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'create', '--vni', 'ff01']), 1, /network ff01 already exists/);
  });

  it('refuses VNIs whose multicast group is reserved, writing nothing', async () => {
    const prefix = freshPrefix();
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'create', '--vni', '2']), 2, /ff05::2, which is reserved \(all-routers\)/);
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'create', '--vni', 'fb']), 2, /ff05::fb, which is reserved \(mDNSv6\)/);
    expect(await vxnetctlJson(prefix, ['network', 'list', '--json'])).toEqual([]);
  });

  it('skips a VNI whose key exists with an invalid spec, and reports it', async () => {
    const prefix = freshPrefix();
    await putRaw(`${prefix}/networks/1`, 'not json');
    await putRaw(`${prefix}/networks/FF01`, '{}');
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '3' });
    const listed = await vxnetctl(prefix, ['network', 'list']);
    expect(listed.code).toBe(0);
    expect(listed.stdout).toBe('VNI  ID  MTU   OWNER  DESCRIPTION\n3    3   auto  -      -\n');
    expect(listed.stderr).toContain(`vxnetctl: warning: ignoring ${prefix}/networks/1: spec is not valid JSON`);
    expect(listed.stderr).toContain(`vxnetctl: warning: ignoring ${prefix}/networks/FF01: "FF01" is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff; did you mean ff01?`);
  });
});

describe('vxnetctl quarantine of deleted VNIs', () => {
  it('does not hand a deleted VNI out again; --vni of it is refused until --force', async () => {
    const prefix = freshPrefix();
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'tenant-a'])).toMatchObject({ vni: '1' });
    expect(await vxnetctl(prefix, ['network', 'delete', '1'])).toMatchObject({ code: 0, stdout: 'deleted network 1\n' });
    const [record] = (await readRaw(`${prefix}/deleted/`)).keys;
    expect(record!.key).toBe(`${prefix}/deleted/1`);
    expect(JSON.parse(record!.value)).toEqual({ deletedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/), owner: 'tenant-a' });

    // 1 is quarantined and 2 reserved (ff05::2): the next network gets 3.
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'tenant-b'])).toMatchObject({ vni: '3', created: true });
    expectOneErrorLine(
      await vxnetctl(prefix, ['network', 'create', '--vni', '1']),
      5,
      /network 1 \(owner "tenant-a"\) was deleted at \S+; its VNI is quarantined until \S+ .*pass --force to use it now/,
    );
    expect(await vxnetctlJson(prefix, ['network', 'create', '--vni', '1', '--force'])).toMatchObject({ vni: '1', created: true });
    // The network under the VNI again makes its record moot: it went in the same transaction.
    expect((await readRaw(`${prefix}/deleted/`)).keys).toEqual([]);
  });

  it('hands out a VNI whose record has expired, and prunes expired records on the way', async () => {
    const prefix = freshPrefix();
    const longAgo = JSON.stringify({ deletedAt: '2020-01-01T00:00:00.000Z' });
    await putRaw(`${prefix}/deleted/1`, longAgo);
    await putRaw(`${prefix}/deleted/ff`, longAgo);
    await putRaw(`${prefix}/deleted/3`, JSON.stringify({ deletedAt: new Date().toISOString() }));
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '1' });
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '4' });
    expect((await readRaw(`${prefix}/deleted/`)).keys.map(({ key }) => key)).toEqual([`${prefix}/deleted/3`]);
    // A shorter quarantine lets it go sooner.
    await putRaw(`${prefix}/deleted/5`, JSON.stringify({ deletedAt: new Date(Date.now() - 2 * 3_600_000).toISOString() }));
    expect(await vxnetctlJson(prefix, ['network', 'create', '--quarantine', '1h'])).toMatchObject({ vni: '5' });
  });

  it('takes the quarantine from the cloud-wide settings; --quarantine overrides it for one command, VXNETD_QUARANTINE does not', async () => {
    const prefix = freshPrefix();
    const hoursAgo = (hours: number) => JSON.stringify({ deletedAt: new Date(Date.now() - hours * 3_600_000).toISOString() });
    await putRaw(`${prefix}/deleted/1`, hoursAgo(2));
    await putRaw(`${prefix}/deleted/3`, hoursAgo(30));
    expect(await vxnetctlJson(prefix, ['settings', 'set', '--quarantine', '48h'])).toEqual({ quarantineSeconds: 172800 });
    // 48 h cloud-wide: neither 1 (2 h ago) nor 3 (30 h ago) is free, whatever the environment says.
    const inEnvironment = await vxnetctl(prefix, ['network', 'create'], { VXNETD_QUARANTINE: '1h' });
    expect(inEnvironment.code, inEnvironment.stderr).toBe(0);
    expect(JSON.parse(inEnvironment.stdout)).toMatchObject({ vni: '4' });
    // One command's shorter quarantine frees 3 for it, and prunes nothing the cloud-wide one still holds.
    expect(await vxnetctlJson(prefix, ['network', 'create', '--quarantine', '24h'])).toMatchObject({ vni: '3' });
    expect((await readRaw(`${prefix}/deleted/`)).keys.map(({ key }) => key)).toEqual([`${prefix}/deleted/1`]);
    expect(await vxnetctlJson(prefix, ['settings', 'set', '--quarantine', '1h'])).toEqual({ quarantineSeconds: 3600 });
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '1' });
    expect(await vxnetctlJson(prefix, ['settings', 'get'])).toEqual({ quarantineSeconds: 3600 });
  });
});

describe('vxnetctl network delete with hosts attached', () => {
  it('is refused, naming the hosts; --force deletes network, attachments, owner index and writes the record in one revision', async () => {
    const prefix = freshPrefix();
    await vxnetctlJson(prefix, ['network', 'create', '--vni', 'a', '--owner', 'tenant']);
    for (const host of ['hv-2', 'hv-1']) expect((await vxnetctl(prefix, ['host', 'attach', host, 'a'])).code).toBe(0);
    await putRaw(`${prefix}/hosts/hv-3/networks/b`, '{}');

    expectOneErrorLine(await vxnetctl(prefix, ['network', 'delete', 'a']), 5, /^vxnetctl: hosts hv-1, hv-2 are still attached to network a; .*--force/);
    expect((await readRaw(`${prefix}/networks/`)).keys).toHaveLength(1);

    const before = await readRaw(prefix);
    const forced = await vxnetctl(prefix, ['network', 'delete', 'a', '--force']);
    expect(forced).toMatchObject({ code: 0, stdout: 'deleted network a and the attachments of hv-1, hv-2\n', stderr: '' });
    const after = await readRaw(prefix);
    expect(after.revision).toBe(before.revision + 1);
    // What is left: the record (written in that revision) and another network's attachment.
    expect(after.keys.map(({ key, modRevision }) => [key, modRevision])).toEqual([
      [`${prefix}/deleted/a`, after.revision],
      [`${prefix}/hosts/hv-3/networks/b`, before.keys.find(({ key }) => key.endsWith('/hv-3/networks/b'))!.modRevision],
    ]);
  });
});

describe('network delete racing a host that attaches (real etcd)', () => {
  it('an attachment written between the read and the commit is seen: refused without --force, deleted with it', async () => {
    const prefix = freshPrefix();
    const schema = new EtcdSchema(prefix);
    await vxnetctlJson(prefix, ['network', 'create', '--vni', 'a']);
    const client = createEtcdClient({ endpoints: [etcdUrl] });
    try {
      // Just before the first commit a scheduler attaches a host; before the first three, agents write statuses.
      const txn = client.kv.txn.bind(client.kv);
      let commits = 0;
      let attaches = 'hv-2';
      client.kv.txn = async (request, options) => {
        commits++;
        if (commits === 1) await putRaw(`${prefix}/hosts/${attaches}/networks/a`, '{}');
        if (commits <= 3) await putRaw(`${prefix}/hosts/hv-${commits + 10}/status/b`, '{}');
        return txn(request, options);
      };
      await expect(deleteNetwork(client, schema, 0xa, { quarantineMs: 3_600_000 })).rejects.toThrow(/^hosts hv-2 are still attached to network a/);
      [commits, attaches] = [0, 'hv-3'];
      expect(await deleteNetwork(client, schema, 0xa, { quarantineMs: 3_600_000, force: true })).toEqual({ detached: ['hv-2', 'hv-3'] });
      expect((await readRaw(`${prefix}/hosts/`)).keys.map(({ key }) => key).filter((key) => key.includes('/networks/'))).toEqual([]);
      expect((await readRaw(`${prefix}/networks/`)).keys).toEqual([]);
    } finally {
      client.close();
    }
  });
});

describe('vxnetctl owners and MTUs', () => {
  it('refuses an owner that already has a network with another MTU, and returns it for the same or no MTU', async () => {
    const prefix = freshPrefix();
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'o', '--mtu', '1400'])).toMatchObject({ vni: '1', mtu: 1400, created: true });
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'o', '--mtu', '1400'])).toMatchObject({ vni: '1', created: false });
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'o'])).toMatchObject({ vni: '1', mtu: 1400, created: false });
    expectOneErrorLine(
      await vxnetctl(prefix, ['network', 'create', '--owner', 'o', '--mtu', '1300']),
      5,
      /owner "o" already has network 1 with MTU 1400, not 1300/,
    );
    await vxnetctlJson(prefix, ['network', 'create', '--owner', 'p']);
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'create', '--owner', 'p', '--mtu', '1400']), 5, /network 3 with no MTU set/);
    expect((await readRaw(`${prefix}/networks/`)).keys).toHaveLength(2);
  });
});

describe('vxnetctl cloud-wide settings', () => {
  it('allocates by the cloud-wide group base, and refuses a --group-base that contradicts it', async () => {
    const prefix = freshPrefix();
    expect(await vxnetctlJson(prefix, ['settings', 'get'])).toEqual({});
    // Under 224.0.0.0 the VNIs 1 … 1ff are the local network control block (224.0.0.0/23).
    const set = await vxnetctl(prefix, ['settings', 'set', '--group-base', '224.0.0.0']);
    expect(set.code, set.stderr).toBe(0);
    expect(JSON.parse(set.stdout)).toEqual({ groupBase: '224.0.0.0' });
    expect(await vxnetctlJson(prefix, ['settings', 'get'])).toEqual({ groupBase: '224.0.0.0' });
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '200' });
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'create', '--vni', '1']), 2, /224\.0\.0\.1, which is reserved/);

    // Under a transient base (ff15::) no group is IANA's: 2 is allocated, as ff15::2.
    await vxnetctlJson(prefix, ['settings', 'set', '--group-base', 'ff15::']);
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '1' });
    expect(await vxnetctlJson(prefix, ['network', 'create'])).toMatchObject({ vni: '2' });
    expect(await vxnetctlJson(prefix, ['network', 'get', '2', '--json'])).toMatchObject({ group: 'ff15::2' });
    expectOneErrorLine(
      await vxnetctl(prefix, ['network', 'create', '--group-base', 'ff05::']),
      2,
      /--group-base ff05:: \(or VXNETD_GROUP_BASE\) differs from the cloud-wide group base ff15::/,
    );
    expect(await vxnetctlJson(prefix, ['network', 'create', '--group-base', 'ff15::'])).toMatchObject({ vni: '3' });
  });
});

describe('vxnetctl exit codes', () => {
  it('exits 2 for a non-canonical VNI and for an unknown flag', async () => {
    const prefix = freshPrefix();
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'get', 'FF01']), 2, /"FF01" is not a canonical VNI.*did you mean ff01\?/);
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'list', '--frobnicate']), 2, /unknown flag --frobnicate/);
  });

  it('exits 3 for a network that does not exist', async () => {
    const prefix = freshPrefix();
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'get', 'abc']), 3, new RegExp(`network abc does not exist \\(key ${prefix}/networks/abc\\)`));
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'delete', 'abc']), 3, /network abc does not exist/);
  });

  it('exits 4 quickly, naming the endpoints, when etcd is not reachable', async () => {
    const nobody = `http://127.0.0.1:${await freePort()}`;
    const started = Date.now();
    const result = await vxnetctl(freshPrefix(), ['network', 'list'], { VXNETD_ETCD_ENDPOINTS: nobody });
    expect(Date.now() - started).toBeLessThan(5_000);
    expectOneErrorLine(result, 4, new RegExp(`cannot reach etcd at ${nobody} .*check --etcd-endpoints`));
  });
});

describe('vxnetctl hosts and status', () => {
  it('refuses to attach a host to a network that does not exist', async () => {
    const prefix = freshPrefix();
    expectOneErrorLine(await vxnetctl(prefix, ['host', 'attach', 'hv-1', 'ff01']), 3, /network ff01 does not exist; create it before attaching hosts/);
    expectOneErrorLine(await vxnetctl(prefix, ['status', 'hv-1']), 3, /host hv-1 has no agent, attachments or status/);
  });

  it('lists, attaches, detaches and deletes in a round trip', async () => {
    const prefix = freshPrefix();
    await vxnetctlJson(prefix, ['network', 'create', '--vni', '64', '--owner', 'customer-42', '--description', 'web tier']);
    await vxnetctlJson(prefix, ['network', 'create', '--vni', '65', '--mtu', '1400']);

    const list = await vxnetctl(prefix, ['network', 'list']);
    expect(list).toMatchObject({ code: 0, stderr: '' });
    expect(list.stdout).toBe(
      ['VNI  ID   MTU   OWNER        DESCRIPTION', '64   100  auto  customer-42  web tier', '65   101  1400  -            -', ''].join('\n'),
    );

    expect(await vxnetctl(prefix, ['host', 'attach', 'hv-1', '64'])).toMatchObject({ code: 0, stdout: 'attached hv-1 to network 64\n' });
    expect(await vxnetctl(prefix, ['host', 'attach', 'hv-2', '64'])).toMatchObject({ code: 0 });
    expect(await vxnetctl(prefix, ['host', 'attach', 'hv-1', '64'])).toMatchObject({ code: 0, stdout: 'hv-1 was already attached to network 64\n' });
    expect(await vxnetctlJson(prefix, ['network', 'get', '64', '--json'])).toEqual({
      vni: '64',
      id: 100,
      mtu: null,
      owner: 'customer-42',
      description: 'web tier',
      group: 'ff05::64',
      hosts: ['hv-1', 'hv-2'],
    });
    const get = await vxnetctl(prefix, ['network', 'get', '64']);
    expect(get.stdout).toBe(
      [
        'vni          64',
        'id           100',
        'group        ff05::64',
        'mtu          auto',
        'owner        customer-42',
        'description  web tier',
        'hosts        hv-1, hv-2',
        '',
      ].join('\n'),
    );

    expect(await vxnetctl(prefix, ['host', 'detach', 'hv-1', '64'])).toMatchObject({ code: 0, stdout: 'detached hv-1 from network 64\n' });
    expectOneErrorLine(await vxnetctl(prefix, ['host', 'detach', 'hv-1', '64']), 3, /host hv-1 is not attached to network 64/);
    expect(await vxnetctlJson(prefix, ['network', 'get', '64', '--json'])).toMatchObject({ hosts: ['hv-2'] });

    expectOneErrorLine(await vxnetctl(prefix, ['network', 'delete', '64']), 5, /hosts hv-2 are still attached to network 64; detach them first/);
    expect(await vxnetctl(prefix, ['host', 'detach', 'hv-2', '64'])).toMatchObject({ code: 0 });
    expect(await vxnetctl(prefix, ['network', 'delete', '64'])).toMatchObject({ code: 0, stdout: 'deleted network 64\n', stderr: '' });
    expect((await vxnetctl(prefix, ['network', 'get', '64'])).code).toBe(3);
    expect(await vxnetctlJson(prefix, ['network', 'list', '--json'])).toEqual([
      { vni: '65', id: 101, mtu: 1400, owner: null, description: null },
    ]);
    // The owner index went with the network: the owner gets a new one.
    expect(await vxnetctlJson(prefix, ['network', 'create', '--owner', 'customer-42'])).toMatchObject({ vni: '1', created: true });
  });

  it('shows agents, attachments and per-network status, reporting invalid entries', async () => {
    const prefix = freshPrefix();
    await vxnetctlJson(prefix, ['network', 'create', '--vni', 'ff01']);
    await vxnetctl(prefix, ['host', 'attach', 'hv-1', 'ff01']);
    await vxnetctl(prefix, ['host', 'attach', 'hv-2', 'ff01']);
    const agent = { version: '0.1.0', pid: 42, startedAt: '2025-01-01T00:00:00Z', underlay: 'u0', underlayAddress: '2001:db8::1', ready: true };
    const status = { state: 'error', reason: 'mtu 9000 exceeds underlay u0 limit 1430', vxlan: 'vxlanff01', bridge: 'brff01', mtu: 1430, specRevision: 7, updatedAt: '2025-01-01T00:00:01Z' };
    await putRaw(`${prefix}/hosts/hv-1/agent`, JSON.stringify(agent));
    await putRaw(`${prefix}/hosts/hv-1/status/ff01`, JSON.stringify(status));
    const ff02 = { state: 'ready', vxlan: 'vxlanff02', bridge: 'brff02', mtu: 1430, updatedAt: '2025-01-01T00:00:02Z' };
    await putRaw(`${prefix}/hosts/hv-1/status/ff02`, JSON.stringify(ff02));
    await putRaw(`${prefix}/hosts/hv-2/status/ff03`, 'garbage');
    await putRaw(`${prefix}/hosts/hv-2/status/ff04`, '{"state":"ready","mtu":1430}');
    // A key no agent can have: its host name is not one.
    await putRaw(`${prefix}/hosts/a b/networks/ff01`, '{}');

    const table = await vxnetctl(prefix, ['status']);
    expect(table.code).toBe(0);
    expect(table.stdout).toBe(
      [
        'HOST  AGENT  VERSION  PID  UNDERLAY  ADDRESS      STARTED',
        'hv-1  ready  0.1.0    42   u0        2001:db8::1  2025-01-01T00:00:00Z',
        'hv-2  down   -        -    -         -            -',
        '',
        'HOST  VNI   ATTACHED  STATE    MTU   UPDATED               REASON',
        'hv-1  ff01  yes       error    1430  2025-01-01T00:00:01Z  mtu 9000 exceeds underlay u0 limit 1430',
        'hv-1  ff02  no        ready    1430  2025-01-01T00:00:02Z  -',
        'hv-2  ff01  yes       pending  -     -                     -',
        '',
      ].join('\n'),
    );
    expect(table.stderr.split('\n')).toEqual([
      `vxnetctl: warning: ignoring ${prefix}/hosts/a b/networks/ff01: host name "a b" is not valid: use letters, digits and inner hyphens, in dot-separated labels of 1…63 characters, at most 253 in all`,
      expect.stringMatching(new RegExp(`^vxnetctl: warning: ignoring ${prefix}/hosts/hv-2/status/ff03: value is not valid JSON`)),
      `vxnetctl: warning: ignoring ${prefix}/hosts/hv-2/status/ff04: vxlan must be a string, got nothing`,
      '',
    ]);

    expect(await vxnetctlJson(prefix, ['status', 'hv-1', '--json'])).toEqual([
      {
        host: 'hv-1',
        agent,
        networks: [
          { vni: 'ff01', id: 0xff01, attached: true, status },
          { vni: 'ff02', id: 0xff02, attached: false, status: ff02 },
        ],
      },
    ]);
  });
});

// Last: it freezes the shared etcd for a few seconds.
describe('vxnetctl against a frozen etcd', () => {
  it('gives up after its deadline with exit code 4', async () => {
    etcd!.signal('SIGSTOP');
    try {
      const started = Date.now();
      const result = await vxnetctl(freshPrefix(), ['network', 'list']);
      expect(Date.now() - started).toBeLessThan(8_000);
      expectOneErrorLine(result, 4, new RegExp(`etcd at ${etcdUrl} did not answer within 3 s`));
    } finally {
      etcd!.signal('SIGCONT');
    }
  });
});
