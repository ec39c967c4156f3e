/**
 * Issue 17, identity and incarnations: every device records the identity it was made under (etcd
 * cluster, prefix, host name) and its network's incarnation (the key's create revision). An agent
 * restarted by mistake with another prefix or host name touches none of the host's devices, and a
 * VM keeps pinging through them; devices of vxnetd 0.1 (alias `vxnetd:<hex>`) are adopted in place;
 * an operator's --take-over adopts another identity's devices in place; a network deleted and
 * created again while an agent was away is not realised on the old bridge, whose ports stay out.
 */
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle, type VmHandle } from './harness/datacentre.js';
import { isAgentAlias, ifindexes, managedLinks, mutatingRequests, pairConverged, readStatus, scrape, sumSamples } from './harness/observe.js';
import { sleep } from './harness/wait.js';

const MTU = 1430;

describe('device identity', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let h1: AgentHandle | undefined;
  let vma: VmHandle;
  let vmb: VmHandle;
  const ns = () => dc.host('h1').ns;

  const startH1 = async (args: string[] = []) => {
    h1 = await dc.startAgent('h1', args);
    await h1.waitReady();
    return h1;
  };
  const stopH1 = async () => {
    const status = await h1?.stop();
    h1 = undefined;
    expect(status?.code).toBe(0);
  };
  const pings = (from: VmHandle, to: VmHandle) => dc.ping(from, to.address, { count: 2, timeoutS: 3 });
  /** h1's devices as they are, after a settling time for anything the agent might still do. */
  const settledIndexes = async () => {
    await sleep(1500);
    return ifindexes(dc, ns());
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    etcd = await dc.etcd();
    await etcd.put('/v1/networks/a1').value('{}');
    const h2 = await dc.startAgent('h2');
    await Promise.all([startH1(), h2.waitReady()]);
    vma = await dc.addVm('h1', 'bra1', 'vma', '2001:db8:a1::1');
    vmb = await dc.addVm('h2', 'bra1', 'vmb', '2001:db8:a1::2');
    expect(await pings(vma, vmb)).toBe(true);
    await stopH1();
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('the alias names the network, the identity and the incarnation', async () => {
    const links = await managedLinks(dc, ns());
    const created = (await etcd.get('/v1/networks/a1').exec()).kvs[0]!.create_revision;
    expect(links.get('bra1').ifalias).toMatch(new RegExp(`^vxnetd:a1 host=h1 etcd=[0-9a-f]{16} prefix=/v1 net=${created}$`));
    expect(links.get('vxlana1').ifalias).toBe(links.get('bra1').ifalias);
  });

  for (const [mistake, args] of [
    ['a mistyped --prefix (an empty desired state)', ['--prefix', '/v2']],
    ['a new --hostname in attached scope', ['--hostname', 'h1-new', '--scope', 'attached']],
  ] as const) {
    it(`an agent restarted with ${mistake} touches nothing, reports the devices, and the VM keeps its network`, async () => {
      const before = await ifindexes(dc, ns());
      const agent = await startH1([...args]);
      const after = await settledIndexes();
      expect(after).toEqual(before);
      expect(await pings(vma, vmb)).toBe(true);
      const samples = await scrape(agent);
      expect(sumSamples(samples, 'vxnetd_netlink_requests_total', { op: 'delete' }) + sumSamples(samples, 'vxnetd_netlink_requests_total', { op: 'change' })).toBe(0);
      expect(sumSamples(samples, 'vxnetd_devices_left_alone')).toBe(2);
      const reported = agent.logs().filter((line) => line.op === 'identity').map((line) => String(line.msg));
      expect(reported.some((msg) => /bra1 belongs to vxnetd of another identity \(host=h1 etcd=[0-9a-f]{16} prefix=\/v1\)/.test(msg))).toBe(true);
      await stopH1();
    });
  }

  it('the real agent afterwards finds its devices as it left them: no change at all', async () => {
    const before = await ifindexes(dc, ns());
    const agent = await startH1();
    expect(await settledIndexes()).toEqual(before);
    expect(mutatingRequests(await scrape(agent))).toEqual({ create: 0, change: 0, delete: 0 });
    await stopH1();
  });

  it("--take-over adopts another identity's devices in place (a renamed host), and gives them back the same way", async () => {
    const before = await ifindexes(dc, ns());
    const oldIdentity = (await managedLinks(dc, ns())).get('bra1').ifalias.split(' ').slice(1, 4).join(' ');
    let agent = await startH1(['--hostname', 'h1-renamed', '--take-over', oldIdentity]);
    await waitFor(async () => isAgentAlias((await managedLinks(dc, ns())).get('bra1')?.ifalias, 'a1', 'h1-renamed') || undefined, 'bra1 adopted by h1-renamed', 5_000);
    expect(await settledIndexes()).toEqual(before);
    expect(mutatingRequests(await scrape(agent))).toMatchObject({ create: 0, delete: 0 });
    expect(await pings(vma, vmb)).toBe(true);
    await stopH1();
    const renamed = (await managedLinks(dc, ns())).get('bra1').ifalias.split(' ').slice(1, 4).join(' ');
    agent = await startH1(['--take-over', renamed]);
    await waitFor(async () => isAgentAlias((await managedLinks(dc, ns())).get('bra1')?.ifalias, 'a1', 'h1') || undefined, 'bra1 given back to h1', 5_000);
    expect(await settledIndexes()).toEqual(before);
    await stopH1();
  });

  it('devices of vxnetd 0.1 (alias vxnetd:<hex>) are adopted once, in place: the alias is the only change, and the next restart changes nothing', async () => {
    for (const device of ['bra1', 'vxlana1']) expect((await dc.exec(ns(), ['ip', 'link', 'set', 'dev', device, 'alias', 'vxnetd:a1'])).code).toBe(0);
    const before = await ifindexes(dc, ns());
    let agent = await startH1();
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'a1', MTU) || undefined, 'a1 adopted', 5_000);
    expect(await settledIndexes()).toEqual(before);
    expect(mutatingRequests(await scrape(agent))).toEqual({ create: 0, change: 2, delete: 0 });
    expect(await pings(vma, vmb)).toBe(true);
    await stopH1();
    agent = await startH1();
    expect(await settledIndexes()).toEqual(before);
    expect(mutatingRequests(await scrape(agent))).toEqual({ create: 0, change: 0, delete: 0 });
    await stopH1();
  });

  it('a network deleted and created again while the agent was away gets a new bridge: the old ports stay out of it', async () => {
    const before = await ifindexes(dc, ns());
    await etcd.delete().key('/v1/networks/a1').exec();
    await etcd.put('/v1/networks/a1').value('{"owner":"tenant-b"}');
    // Tenant B's VM on h2 (h2's agent was running: it saw the delete and re-created its devices).
    await waitFor(async () => pairConverged(await managedLinks(dc, dc.host('h2').ns), 'a1', MTU) || undefined, 'a1 on h2 again', 10_000);
    const vmc = await dc.addVm('h2', 'bra1', 'vmc', '2001:db8:a1::3');
    await startH1();
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'a1', MTU) || undefined, 'a1 re-created on h1', 10_000);
    const after = await ifindexes(dc, ns());
    expect(after.get('bra1')).not.toBe(before.get('bra1'));
    expect((await dc.link(ns(), 'vm-vma'))?.master).toBeUndefined();
    expect(await dc.ping(vma, vmc.address, { count: 2, timeoutS: 2 })).toBe(false);
    const replaced = h1!.logs().filter((line) => /belongs to an earlier network a1 \(incarnation \d+, now \d+\)/.test(String(line.msg)));
    expect(replaced.length).toBeGreaterThan(0);
    expect(await readStatus(etcd, 'h1', 'a1')).toMatchObject({ state: 'ready' });
    await stopH1();
  });

  it('a labelled veth and a renamed bridge with ports carry our alias but are never deleted or changed: reported', async () => {
    // Whatever the tests above left, start from a converged a1 on h1.
    await startH1();
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'a1', MTU) || undefined, 'a1 on h1', 10_000);
    const alias = (await managedLinks(dc, ns())).get('bra1').ifalias;
    await stopH1();
    const ip = async (...args: string[]) => expect((await dc.exec(ns(), ['ip', ...args])).code, args.join(' ')).toBe(0);
    await ip('link', 'add', 'name', 'lab0', 'type', 'veth', 'peer', 'name', 'lab1');
    await ip('link', 'set', 'dev', 'lab0', 'alias', alias);
    await ip('link', 'set', 'dev', 'bra1', 'name', 'oldbr');
    await ip('link', 'set', 'dev', 'vm-vma', 'master', 'oldbr');
    const before = await dc.links(ns());
    const indexOf = (links: any[], name: string) => links.find((l) => l.ifname === name)?.ifindex;
    const agent = await startH1();
    await waitFor(async () => pairConverged(await managedLinks(dc, ns()), 'a1', MTU) || undefined, 'a1 converged again', 10_000);
    await sleep(1500);
    const after = await dc.links(ns());
    for (const name of ['lab0', 'oldbr']) expect(indexOf(after, name), name).toBe(indexOf(before, name));
    expect(after.find((l) => l.ifname === 'lab0').ifalias).toBe(alias);
    expect(after.find((l) => l.ifname === 'vm-vma').master).toBe('oldbr');
    expect(sumSamples(await scrape(agent), 'vxnetd_devices_left_alone')).toBe(2);
    const reported = agent.logs().filter((line) => line.op === 'identity').map((line) => String(line.msg));
    expect(reported).toEqual(expect.arrayContaining([expect.stringMatching(/^device lab0 carries vxnetd's alias .* but is a veth under another name: left alone/), expect.stringMatching(/^device oldbr carries vxnetd's alias .* but is a bridge under another name: left alone/)]));
    await stopH1();
  });

  it('an agent pointed at another, empty etcd cluster touches nothing: the devices name the old cluster', async () => {
    // vma back on the network, reaching tenant B's VM on h2 (vmb's bridge went with the old incarnation).
    expect((await dc.exec(ns(), ['ip', 'link', 'set', 'dev', 'vm-vma', 'master', 'bra1'])).code).toBe(0);
    const reachesVmc = () => dc.ping(vma, '2001:db8:a1::3', { count: 2, timeoutS: 3 });
    expect(await reachesVmc()).toBe(true);
    const before = await ifindexes(dc, ns());
    await dc.restartEtcd({ empty: true });
    const agent = await startH1();
    expect(await settledIndexes()).toEqual(before);
    expect(await reachesVmc()).toBe(true);
    const samples = await scrape(agent);
    expect(sumSamples(samples, 'vxnetd_netlink_requests_total', { op: 'delete' })).toBe(0);
    expect(sumSamples(samples, 'vxnetd_devices_left_alone')).toBeGreaterThanOrEqual(2);
    expect(agent.logs().some((line) => line.op === 'identity' && /^device bra1 belongs to vxnetd of another identity/.test(String(line.msg)))).toBe(true);
    await stopH1();
  });
});
