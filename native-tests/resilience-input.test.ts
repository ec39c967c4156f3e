/**
 * Issue 4, bad input (DESIGN.md §1, §3 "Bad input never crashes the agent and
 * never affects other networks"): every kind of bad key or value, from the
 * initial list and from the watch, gives a status error with a reason a
 * person can act on (when the key names a VNI), a log line and a counted
 * vxnetd_spec_errors_total{reason}; good networks in the same batch converge;
 * fixing the value converges the network.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle } from './harness/datacentre.js';
import { httpStatus, ifindexes, managedLinks, pairConverged, putInTxns, scrape, sumSamples } from './harness/observe.js';

const MTU = 1430;

interface BadValue {
  hex: string;
  value: string;
  reason: string;
  /** What the status reason must say for a person to act on it. */
  says: RegExp;
  /** A value that fixes it (reserved VNIs cannot be fixed by a value). */
  fix?: string;
}

/** Keys that do not name a network: no status is possible, only a log line and the metric. */
const BAD_KEYS = ['FF01', '0ff01', '1000000', '0', 'ff/01', 'ff01 ', 'g1'];

const BAD_VALUES: BadValue[] = [
  { hex: 'bd', value: '{"mtu":1400,}', reason: 'invalid_json', says: /not valid JSON/, fix: '{"mtu":1400}' },
  { hex: 'b2', value: '[1,2]', reason: 'not_object', says: /JSON object.*array/, fix: '{}' },
  { hex: 'b3', value: '"vxlan"', reason: 'not_object', says: /JSON object.*string/, fix: '{}' },
  { hex: 'b4', value: 'null', reason: 'not_object', says: /JSON object.*null/, fix: '{}' },
  { hex: 'b5', value: '{"mtu":"1400"}', reason: 'wrong_type', says: /mtu.*integer.*"1400"/, fix: '{"mtu":1400}' },
  { hex: 'b6', value: '{"mtu":67}', reason: 'mtu_out_of_range', says: /mtu 67\b.*68/, fix: '{"mtu":1400}' },
  { hex: 'b7', value: '{"mtu":70000}', reason: 'mtu_out_of_range', says: /mtu 70000\b.*65535/, fix: '{"mtu":1400}' },
  { hex: 'b8', value: '{"mtu":9000}', reason: 'mtu_above_underlay', says: /mtu 9000\b.*u0.*1430/, fix: '{"mtu":1430}' },
  { hex: 'b9', value: '{"type":"geneve"}', reason: 'unknown_type', says: /geneve.*vxlan/, fix: '{"type":"vxlan"}' },
  { hex: 'ba', value: JSON.stringify({ description: 'ok', pad: 'x'.repeat(70_000) }), reason: 'too_large', says: /\b70\d{3}\b.*65536/, fix: '{"description":"ok"}' },
  { hex: 'bb', value: JSON.stringify({ owner: 'o'.repeat(300) }), reason: 'field_too_long', says: /owner.*300.*256/, fix: '{"owner":"customer-1"}' },
  { hex: 'bc', value: '{"owner":42}', reason: 'wrong_type', says: /owner.*string.*42/, fix: '{"owner":"42"}' },
  { hex: '2', value: '{}', reason: 'reserved_group', says: /ff05::2\b.*reserved/ },
  { hex: 'fb', value: '{}', reason: 'reserved_group', says: /ff05::fb\b.*reserved/ },
  { hex: '101', value: '{}', reason: 'reserved_group', says: /ff05::101\b.*reserved/ },
];

describe('bad input', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let agent: AgentHandle;
  let exited = false;
  const ns = () => dc.host('h1').ns;
  const key = (name: string) => `/v1/networks/${name}`;
  const status = async (hex: string) => {
    const value = await etcd.get(`/v1/hosts/h1/status/${hex}`).string();
    return value ? JSON.parse(value) : undefined;
  };
  const specErrors = async () => {
    const samples = await scrape(agent);
    const reasons = new Set([...BAD_VALUES.map((b) => b.reason), 'invalid_json', 'invalid_key']);
    return Object.fromEntries([...reasons].map((r) => [r, sumSamples(samples, 'vxnetd_spec_errors_total', { reason: r })]));
  };
  const expectAlive = async () => {
    expect(exited, 'agent still running').toBe(false);
    expect(await httpStatus(agent, '/healthz')).toBe(200);
    expect(await httpStatus(agent, '/readyz')).toBe(200);
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1'] });
    etcd = await dc.etcd();
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('bad keys and values already in etcd at start: the agent becomes ready, good networks converge, bad ones are reported', async () => {
    await putInTxns(etcd, [
      [key('c1'), '{}'],
      [key('b1'), '{"mtu": 1400'],
      [key('fb'), '{}'],
      [key('FF01'), '{}'],
      [key('ff/01'), '{}'],
    ]);
    agent = await dc.startAgent('h1', ['--resync-interval', '1h']);
    void agent.exited.then(() => (exited = true));
    await agent.waitReady();
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'c1', MTU), 'c1 converged');
    const b1 = await waitFor(async () => (await status('b1'))?.state === 'error' && status('b1'), 'status error for b1');
    expect(b1.reason).toMatch(/not valid JSON/);
    expect(typeof b1.specRevision).toBe('number');
    const fb = await waitFor(async () => (await status('fb'))?.state === 'error' && status('fb'), 'status error for fb');
    expect(fb.reason).toMatch(/ff05::fb\b.*reserved/);
    expect(await specErrors()).toMatchObject({ invalid_json: 1, reserved_group: 1, invalid_key: 2 });
    const logs = agent.logs();
    expect(logs.some((l) => l.vni === 'b1' && l.level >= 40 && /not valid JSON/.test(l.msg))).toBe(true);
    expect(logs.some((l) => l.key === 'FF01' && l.level >= 40)).toBe(true);
    expect(logs.some((l) => l.key === 'ff/01' && l.level >= 40)).toBe(true);
    // Never normalised: FF01 is not ff01.
    const links = await managedLinks(dc, ns());
    expect([...links.keys()].sort()).toEqual(['brc1', 'vxlanc1']);
    await expectAlive();
  });

  it('every kind of bad input in one watched batch: never a crash, the good network of the batch converges, each bad one is reported', async () => {
    const before = await specErrors();
    const c1 = await ifindexes(dc, ns());
    await putInTxns(etcd, [
      ...BAD_VALUES.map((b): [string, string] => [key(b.hex), b.value]),
      ...BAD_KEYS.map((k): [string, string] => [key(k), '{}']),
      // Good, with an unknown field (forward compatibility), in the same transaction.
      [key('c2'), '{"mtu":1400,"futureField":{"x":1}}'],
    ]);
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'c2', 1400), 'c2 converged');
    for (const bad of BAD_VALUES) {
      const s = await waitFor(async () => {
        const value = await status(bad.hex);
        return value?.state === 'error' ? value : undefined;
      }, `status error for ${bad.hex}`);
      expect(s.reason, `reason for ${bad.hex} (${bad.value.slice(0, 40)})`).toMatch(bad.says);
      expect(s).toMatchObject({ vxlan: `vxlan${bad.hex}`, bridge: `br${bad.hex}` });
      expect(
        agent.logs().some((l) => l.vni === bad.hex && l.level >= 40 && bad.says.test(l.msg)),
        `a warning log line for ${bad.hex}`,
      ).toBe(true);
    }
    for (const name of BAD_KEYS) {
      expect(agent.logs().some((l) => l.key === name && l.level >= 40), `a warning log line for key ${JSON.stringify(name)}`).toBe(true);
    }
    // Each bad value counted once, under its own reason.
    const expected: Record<string, number> = { ...before };
    for (const bad of BAD_VALUES) expected[bad.reason] = (expected[bad.reason] ?? 0) + 1;
    expected.invalid_key = (expected.invalid_key ?? 0) + BAD_KEYS.length;
    await waitFor(async () => JSON.stringify(await specErrors()) === JSON.stringify(expected) || undefined, 'spec error counters', 3_000).catch(() => undefined);
    expect(await specErrors()).toEqual(expected);
    // Nothing was created for any bad key or value; c1 was not touched.
    const links = await managedLinks(dc, ns());
    expect([...links.keys()].sort()).toEqual(['brc1', 'brc2', 'vxlanc1', 'vxlanc2']);
    expect(links.get('vxlanc1').ifindex).toBe(c1.get('vxlanc1'));
    expect(links.get('brc1').ifindex).toBe(c1.get('brc1'));
    expect((await status('c2'))?.state).toBe('ready');
    await expectAlive();
  });

  it('fixing each bad value converges its network; deleting bad keys and reserved VNIs leaves no trace', async () => {
    await putInTxns(etcd, [[key('b1'), '{}'], ...BAD_VALUES.filter((b) => b.fix).map((b): [string, string] => [key(b.hex), b.fix!])]);
    for (const hex of ['b1', ...BAD_VALUES.filter((b) => b.fix).map((b) => b.hex)]) {
      const s = await waitFor(async () => {
        const value = await status(hex);
        return value?.state === 'ready' ? value : undefined;
      }, `${hex} ready after the fix`);
      expect(s.reason).toBeUndefined();
    }
    const links = await managedLinks(dc, ns());
    expect(pairConverged(links, 'b5', 1400)).toBe(true);
    expect(pairConverged(links, 'b8', 1430)).toBe(true);
    expect(pairConverged(links, 'ba', MTU)).toBe(true);

    await etcd.delete().key(key('fb'));
    await Promise.all([...BAD_KEYS.map((k) => etcd.delete().key(key(k))), etcd.delete().key(key('2')), etcd.delete().key(key('101'))]);
    for (const hex of ['2', 'fb', '101']) await waitFor(async () => (await status(hex)) === undefined, `status of ${hex} removed`);
    expect((await status('c1'))?.state).toBe('ready');
    await expectAlive();
  });

  it('a converged network given a bad value keeps its devices (VMs keep working) and reports; fixing it restores ready', async () => {
    const before = await ifindexes(dc, ns());
    await etcd.put(key('c1')).value('{"mtu": }');
    const s = await waitFor(async () => (await status('c1'))?.state === 'error' && status('c1'), 'c1 reports the bad value');
    expect(s.reason).toMatch(/not valid JSON/);
    expect(await ifindexes(dc, ns())).toEqual(before);
    await etcd.put(key('c1')).value('{}');
    await waitFor(async () => (await status('c1'))?.state === 'ready', 'c1 ready again');
    expect(await ifindexes(dc, ns())).toEqual(before);
    await expectAlive();
  });
});
