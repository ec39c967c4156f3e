/**
 * vxnetctl's IPAM commands against a real etcd on loopback: 16 concurrent creates get 16 distinct
 * /64s, refusals exit nonzero with their message and write nothing, a delete frees its /64, a
 * network's IPAM goes with a forced network delete in the same revision, and availability follows
 * what live routers report. Needs no root and no namespaces; the CLI is run as built.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parsePool } from '../src/model/ipv6-prefix.js';
import { createEtcdClient } from '../src/store/client.js';
import { setIpamPool } from '../src/store/ipam.js';
import { RefusedError } from '../src/store/networks.js';
import { EtcdSchema } from '../src/store/schema.js';
import { startLoopbackEtcd, type LoopbackEtcd } from './harness/loopback-etcd.js';
import { runCommand, type CommandResult } from './harness/processes.js';
import { base64, readRaw as readRawKeys } from './harness/etcd-gateway.js';

const CLI = fileURLToPath(new URL('../dist/cli/vxnetctl.js', import.meta.url));
const POOL = '2001:db8:100::/48';

let loopbackEtcd: LoopbackEtcd | undefined;
let etcdUrl: string;
let prefixCount = 0;

function freshPrefix(): string {
  return `/ipam${++prefixCount}`;
}


/** Writes a raw key through etcd's JSON gateway, as an agent would. */
async function putRaw(key: string, value: string): Promise<void> {
  const response = await fetch(`${etcdUrl}/v3/kv/put`, { method: 'POST', body: JSON.stringify({ key: base64(key), value: base64(value) }) });
  expect(response.ok, `etcd put: ${await response.text()}`).toBe(true);
}


const readRaw = (prefix: string) => readRawKeys(etcdUrl, prefix);

function vxnetctl(prefix: string, args: string[], timeoutMs = 20_000): Promise<CommandResult> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('VXNETD_')));
  return runCommand([process.execPath, CLI, ...args], { timeoutMs, env: { ...env, VXNETD_ETCD_ENDPOINTS: etcdUrl, VXNETD_PREFIX: prefix } });
}

async function vxnetctlJson<T>(prefix: string, args: string[]): Promise<T> {
  const result = await vxnetctl(prefix, args);
  expect(result, `vxnetctl ${args.join(' ')}`).toMatchObject({ code: 0, stderr: '' });
  return JSON.parse(result.stdout) as T;
}

function expectOneErrorLine(result: CommandResult, code: number, pattern: RegExp): void {
  expect(result.code, result.stderr).toBe(code);
  expect(result.stdout).toBe('');
  expect(result.stderr).toMatch(/^vxnetctl: [^\n]+\n$/);
  expect(result.stderr).toMatch(pattern);
}

interface IpamJson {
  vni: string;
  id: number;
  prefix: string;
  dns: string[];
  createdAt: string;
  revision: number;
}

/** A cloud with a pool and networks 1, 3, 4 … (2 is skipped: ff05::2 is all-routers). */
async function cloud(networks: number, pool = POOL): Promise<{ prefix: string; vnis: string[] }> {
  const prefix = freshPrefix();
  expect(await vxnetctlJson(prefix, ['ipam', 'pool', 'set', pool])).toEqual({ prefix: pool, previous: null });
  const vnis: string[] = [];
  for (let i = 0; i < networks; i++) vnis.push((await vxnetctlJson<{ vni: string }>(prefix, ['network', 'create'])).vni);
  return { prefix, vnis };
}

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: build first with npm run build`);
  loopbackEtcd = await startLoopbackEtcd();
  etcdUrl = loopbackEtcd.url;
});

afterAll(async () => {
  await loopbackEtcd?.destroy();
});

describe('vxnetctl ipam create', () => {
  it('gives 16 concurrent creates on 16 networks the 16 lowest /64s of the pool, each once', async () => {
    const { prefix, vnis } = await cloud(16);
    const created = await Promise.all(vnis.map((vni) => vxnetctlJson<IpamJson>(prefix, ['ipam', 'create', vni])));
    const prefixes = created.map((entry) => entry.prefix);
    expect(new Set(prefixes).size).toBe(16);
    expect([...prefixes].sort()).toEqual(Array.from({ length: 16 }, (_, i) => `2001:db8:100:${i === 0 ? '' : `${i.toString(16)}:`}:/64`).sort());
    for (const entry of created) expect(vnis).toContain(entry.vni);

    // What etcd holds: one entry and one index key per network, naming each other.
    const { keys } = await readRaw(`${prefix}/ipam`);
    const entries = keys.filter(({ key }) => key.startsWith(`${prefix}/ipam/`));
    const index = keys.filter(({ key }) => key.startsWith(`${prefix}/ipam-prefixes/`));
    expect(entries).toHaveLength(16);
    expect(index).toHaveLength(16);
    for (const { key, value, modRevision } of entries) {
      const vni = key.slice(`${prefix}/ipam/`.length);
      const entry = JSON.parse(value) as { prefix: string };
      const indexKey = index.find(({ key: k }) => `${k.slice(`${prefix}/ipam-prefixes/`.length)}/64` === entry.prefix)!;
      expect(indexKey.value).toBe(vni);
      // Written in the same transaction.
      expect(indexKey.modRevision).toBe(modRevision);
      expect(created.find((c) => c.vni === vni)!.revision).toBe(modRevision);
    }

    const listed = await vxnetctlJson<IpamJson[]>(prefix, ['ipam', 'list', '--json']);
    expect(listed.map((entry) => entry.vni)).toEqual(vnis);
  });

  it('takes --ipv6-prefix and name servers, prints JSON, and shows it in get, list and address', async () => {
    const { prefix } = await cloud(1);
    const created = await vxnetctlJson<IpamJson>(prefix, ['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100:1::/64', '--dns', '2001:db8::53', '--dns', 'fd00::53']);
    expect(created).toEqual({ vni: '1', id: 1, prefix: '2001:db8:100:1::/64', dns: ['2001:db8::53', 'fd00::53'], createdAt: expect.stringMatching(/^\d{4}-/), revision: expect.any(Number) });
    expect(await vxnetctlJson(prefix, ['ipam', 'get', '1', '--json'])).toEqual({
      ...created,
      available: false,
      waitingFor: [],
      routers: [],
      reason: 'no live router: nothing advertises the prefix',
    });
    const list = await vxnetctl(prefix, ['ipam', 'list']);
    expect(list).toMatchObject({ code: 0, stderr: '' });
    expect(list.stdout.split('\n').map((line) => line.split(/ +/))).toEqual([
      ['VNI', 'PREFIX', 'DNS', 'REVISION', 'CREATED'],
      ['1', '2001:db8:100:1::/64', '2001:db8::53,fd00::53', String(created.revision), created.createdAt],
      [''],
    ]);
    expect(await vxnetctl(prefix, ['address', '1', '52:54:00:d6:c2:a9'])).toMatchObject({ code: 0, stdout: '2001:db8:100:1:5054:ff:fed6:c2a9\n', stderr: '' });
    expect(await vxnetctlJson(prefix, ['ipam', 'pool', 'get'])).toEqual({ prefix: POOL });
  });

  it('refuses with a message and an exit code, writing nothing', async () => {
    const prefix = freshPrefix();
    await vxnetctlJson(prefix, ['network', 'create']);
    await vxnetctlJson(prefix, ['network', 'create']);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1']), 5, /no IPAM pool is set: set the cloud-wide one first, e\.g\. vxnetctl ipam pool set/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'pool', 'get']), 3, /no IPAM pool is set/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'pool', 'set', '10.0.0.0/8']), 2, /is not an IPv6 prefix \(IPAM is IPv6 only\)/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'pool', 'set', '2001:db8:100::/80']), 2, /longer than \/64/);
    expect(await vxnetctlJson(prefix, ['ipam', 'pool', 'set', '2001:db8:100:4::/63'])).toEqual({ prefix: '2001:db8:100:4::/63', previous: null });

    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '5']), 3, /network 5 does not exist; create it first/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100::/60']), 2, /--ipv6-prefix: 2001:db8:100::\/60 is not a \/64/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100:4::1/64']), 2, /--ipv6-prefix: "2001:db8:100:4::1\/64" has host bits set/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100:8::/64']), 5, /2001:db8:100:8::\/64 is outside the IPAM pool 2001:db8:100:4::\/63/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1', '--dns', 'fe80::53']), 2, /--dns: name server fe80::53 is not a unicast address a VM can reach/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1', '--dns', '192.0.2.53']), 2, /not a plain IPv6 address/);
    expect((await readRaw(`${prefix}/ipam/`)).keys).toEqual([]);

    expect(await vxnetctlJson(prefix, ['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100:5::/64'])).toMatchObject({ prefix: '2001:db8:100:5::/64' });
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '1']), 1, /network 1 already has IPAM: prefix 2001:db8:100:5::\/64/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '3', '--ipv6-prefix', '2001:db8:100:5::/64']), 1, /2001:db8:100:5::\/64 is already allocated to network 1/);
    expect(await vxnetctlJson(prefix, ['ipam', 'create', '3'])).toMatchObject({ prefix: '2001:db8:100:4::/64' });
    await vxnetctlJson(prefix, ['network', 'create']);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'create', '4']), 1, /the IPAM pool 2001:db8:100:4::\/63 is exhausted/);
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'pool', 'set', '2001:db8:100:4::/64']), 5, /1 allocated prefix would lie outside 2001:db8:100:4::\/64: 2001:db8:100:5::\/64 \(network 1\)/);
    expect(await vxnetctlJson(prefix, ['ipam', 'pool', 'get'])).toEqual({ prefix: '2001:db8:100:4::/63' });
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'get', '4']), 3, /network 4 has no IPAM \(a layer-2 network\)/);
    expectOneErrorLine(await vxnetctl(prefix, ['address', '4', '52:54:00:d6:c2:a9']), 3, /network 4 has no IPAM/);
    expectOneErrorLine(await vxnetctl(prefix, ['address', '1', '52:54:00:d6:c2']), 2, /is not a MAC address/);
    expect((await readRaw(`${prefix}/ipam/`)).keys.map(({ key }) => key)).toEqual([`${prefix}/ipam/1`, `${prefix}/ipam/3`]);

    // A wider pool that holds every allocation is taken, and the next create uses it.
    expect(await vxnetctlJson(prefix, ['ipam', 'pool', 'set', '2001:db8:100::/48'])).toEqual({ prefix: '2001:db8:100::/48', previous: '2001:db8:100:4::/63' });
    expect(await vxnetctlJson(prefix, ['ipam', 'create', '4'])).toMatchObject({ prefix: '2001:db8:100::/64' });
  });
});

describe('ipam pool set against a create that commits in between (in-process, the real etcd judges the range comparison)', () => {
  it('reads again and refuses, instead of leaving the new /64 outside the pool', async () => {
    const { prefix } = await cloud(3);
    await vxnetctlJson(prefix, ['ipam', 'create', '1']);
    const client = createEtcdClient({ endpoints: [etcdUrl] });
    try {
      // Another vxnetctl takes a /64 outside the new pool after pool set read the allocations, before it commits.
      const txn = client.kv.txn.bind(client.kv);
      let raced = false;
      client.kv.txn = async (request, options) => {
        if (!raced) {
          raced = true;
          const created = await vxnetctl(prefix, ['ipam', 'create', '3', '--ipv6-prefix', '2001:db8:100:ff00::/64']);
          expect(created.code, created.stderr).toBe(0);
        }
        return txn(request, options);
      };
      await expect(setIpamPool(client, new EtcdSchema(prefix), parsePool('2001:db8:100::/56'))).rejects.toThrow(
        new RefusedError(
          '1 allocated prefix would lie outside 2001:db8:100::/56: 2001:db8:100:ff00::/64 (network 3); choose a pool that contains it, or delete its IPAM first (vxnetctl ipam delete HEX)',
        ),
      );
      expect(raced).toBe(true);
      expect(await vxnetctlJson(prefix, ['ipam', 'pool', 'get'])).toEqual({ prefix: POOL });
    } finally {
      client.close();
    }
  });
});

describe('vxnetctl ipam delete and network delete', () => {
  it('a delete frees the /64 for the next create; the network stays a layer-2 network', async () => {
    const { prefix } = await cloud(3);
    await vxnetctlJson(prefix, ['ipam', 'create', '1']);
    await vxnetctlJson(prefix, ['ipam', 'create', '3']);
    const before = await readRaw(prefix);
    expect(await vxnetctl(prefix, ['ipam', 'delete', '1'])).toMatchObject({ code: 0, stdout: 'deleted the IPAM of network 1 (prefix 2001:db8:100::/64)\n', stderr: '' });
    const after = await readRaw(prefix);
    expect(after.revision).toBe(before.revision + 1);
    expect(after.keys.filter(({ key }) => key.includes('/ipam/') || key.includes('/ipam-prefixes/')).map(({ key }) => key)).toEqual([
      `${prefix}/ipam-prefixes/2001:db8:100:1::`,
      `${prefix}/ipam/3`,
    ]);
    expect(await vxnetctlJson(prefix, ['network', 'get', '1', '--json'])).toMatchObject({ vni: '1' });
    expectOneErrorLine(await vxnetctl(prefix, ['ipam', 'delete', '1']), 3, /network 1 has no IPAM entry/);
    expect(await vxnetctlJson(prefix, ['ipam', 'create', '4'])).toMatchObject({ prefix: '2001:db8:100::/64' });
  });

  it('network delete is refused while the network has IPAM; --force deletes entry and index in the same revision', async () => {
    const { prefix } = await cloud(1);
    await vxnetctlJson(prefix, ['ipam', 'create', '1']);
    await vxnetctl(prefix, ['host', 'attach', 'hv-1', '1']);
    expectOneErrorLine(await vxnetctl(prefix, ['network', 'delete', '1']), 5, /hosts hv-1 are still attached to network 1/);
    await vxnetctl(prefix, ['host', 'detach', 'hv-1', '1']);
    expectOneErrorLine(
      await vxnetctl(prefix, ['network', 'delete', '1']),
      5,
      /^vxnetctl: network 1 has IPAM \(prefix 2001:db8:100::\/64\); delete it first \(vxnetctl ipam delete 1\), or pass --force to delete it with the network\n$/,
    );
    const before = await readRaw(prefix);
    expect(await vxnetctl(prefix, ['network', 'delete', '1', '--force'])).toMatchObject({
      code: 0,
      stdout: 'deleted network 1 with its IPAM (prefix 2001:db8:100::/64)\n',
      stderr: '',
    });
    const after = await readRaw(prefix);
    expect(after.revision).toBe(before.revision + 1);
    expect(after.keys.map(({ key }) => key)).toEqual([`${prefix}/deleted/1`, `${prefix}/ipam-pool`]);
  });
});

describe('vxnetctl ipam get and wait: available when every live router serves it', () => {
  const liveness = (role?: string) =>
    JSON.stringify({ version: '0.1.0', pid: 1, startedAt: '2026-12-01T00:00:00Z', underlay: 'u0', ready: true, ...(role ? { role } : {}) });
  const status = (ipam: object) => JSON.stringify({ state: 'ready', vxlan: 'vxlan1', bridge: 'br1', updatedAt: '2026-12-01T00:00:00Z', ipam });

  it('names the routers it waits for, and wait returns once they report the current revision', async () => {
    const { prefix } = await cloud(1);
    const { revision, prefix: subnet } = await vxnetctlJson<IpamJson>(prefix, ['ipam', 'create', '1']);
    await putRaw(`${prefix}/hosts/hv-1/agent`, liveness());
    await putRaw(`${prefix}/hosts/r1/agent`, liveness('router'));
    await putRaw(`${prefix}/hosts/r2/agent`, liveness('router'));
    await putRaw(`${prefix}/hosts/r1/status/1`, status({ revision, prefix: subnet }));
    await putRaw(`${prefix}/hosts/r2/status/1`, status({ revision, reason: 'radvd exited with status 1' }));

    const get = await vxnetctl(prefix, ['ipam', 'get', '1']);
    expect(get).toMatchObject({ code: 0, stderr: '' });
    expect(get.stdout).toContain('available  no: waiting for r2 (cannot serve it: radvd exited with status 1)\n');
    expectOneErrorLine(
      await vxnetctl(prefix, ['ipam', 'wait', '1', '--timeout', '1s']),
      6,
      /^vxnetctl: IPAM of network 1 is not available after 1 s: waiting for r2 \(cannot serve it: radvd exited with status 1\)\n$/,
    );

    const waiting = vxnetctl(prefix, ['ipam', 'wait', '1', '--timeout', '20s']);
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const reported = Date.now();
    await putRaw(`${prefix}/hosts/r2/status/1`, status({ revision, prefix: subnet }));
    const waited = await waiting;
    expect(Date.now() - reported).toBeLessThan(2_000);
    expect(waited).toMatchObject({ code: 0, stdout: `IPAM of network 1 (${subnet}) is available: served by r1, r2\n`, stderr: '' });
    expect(await vxnetctlJson(prefix, ['ipam', 'get', '1', '--json'])).toMatchObject({
      available: true,
      waitingFor: [],
      routers: [
        { host: 'r1', serving: true },
        { host: 'r2', serving: true },
      ],
    });
  });
});
