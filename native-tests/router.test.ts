/**
 * Issue 18: a routed network. Two hypervisors and a router (`--role router`) on a real etcd;
 * `vxnetctl ipam create` gives network 64 a /64; the router puts its addresses on br64 and the
 * real radvd advertises the prefix and the MTU; VMs take their addresses by SLAAC (EUI-64 of
 * their MAC, as `vxnetctl address` says) and reach the router's `<prefix>::1` and each other.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle, type VmHandle } from './harness/datacentre.js';
import { elapsedUntil, readStatus, scrape, sumSamples } from './harness/observe.js';
import { radvdPid } from './harness/radvd.js';
import { runVxnetctl } from './harness/vxnetctl.js';
import { parseMac, slaacAddress } from '../src/model/eui64.js';
import { formatIpv6, parseIpv6Prefix } from '../src/model/ipv6-prefix.js';

const MACS = { vm1: '52:54:00:d6:c2:a9', vm2: '52:54:00:12:34:56' };

describe('routed networks: a router with radvd', () => {
  let dc: DataCentre;
  let etcd: Etcd3;
  let router: AgentHandle & { radvdDir: string };
  let prefix: string;
  let routerAddress: string;
  const slaac: Record<string, string> = {};
  const vms: Record<string, VmHandle> = {};

  const vxnetctl = (...args: string[]) => runVxnetctl(dc, args);
  const sh = async (ns: string, ...argv: string[]) => {
    const result = await dc.exec(ns, argv);
    if (result.code !== 0) throw new Error(`${argv.join(' ')} in ${ns}: ${result.stderr}`);
    return result.stdout;
  };
  /** IPv6 addresses of a device (Debian 12's `ip` shows no IFA_PROTO: which are vxnetd's is the unit tests' to check). */
  const addresses = async (ns: string, device: string) => {
    const [link] = JSON.parse(await sh(ns, 'ip', '-6', '-j', 'addr', 'show', 'dev', device)) as Array<{ addr_info: Array<{ local: string; prefixlen: number; tentative?: boolean }> }>;
    return link?.addr_info ?? [];
  };
  const routerNs = () => dc.host('router').ns;
  /** A VM that configures itself by SLAAC: its MAC set, router advertisements accepted, then up. */
  const slaacVm = async (host: string, name: keyof typeof MACS) => {
    const vm = await dc.addVm(host, 'br64', name, `fd00:99::${name === 'vm1' ? 1 : 2}`);
    await sh(vm.ns, 'ip', 'link', 'set', 'eth0', 'down');
    await sh(vm.ns, 'ip', 'link', 'set', 'eth0', 'address', MACS[name]);
    await sh(vm.ns, 'sysctl', '-q', '-w', 'net.ipv6.conf.eth0.accept_ra=2', 'net.ipv6.conf.eth0.autoconf=1');
    await sh(vm.ns, 'ip', 'link', 'set', 'eth0', 'up');
    vms[name] = vm;
    return vm;
  };

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['hv1', 'hv2', 'router', 'router2'] });
    etcd = await dc.etcd();
    for (const args of [
      ['network', 'create', '--vni', '64'],
      ['ipam', 'pool', 'set', '2001:db8:100::/48'],
      ['ipam', 'create', '64', '--dns', '2001:db8::53'],
    ]) {
      const result = await vxnetctl(...args);
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(0);
    }
    prefix = (JSON.parse((await vxnetctl('ipam', 'get', '64', '--json')).stdout) as { prefix: string }).prefix;
    routerAddress = formatIpv6(parseIpv6Prefix(prefix).address | 1n);
    for (const host of ['hv1', 'hv2']) await (await dc.startAgent(host)).waitReady();
    router = await dc.startRouter('router');
    await router.waitReady();
  }, 90_000);

  afterAll(async () => {
    await dc?.destroy();
  });

  it('ipam wait returns once the router serves the entry; its status reports the prefix and revision', async () => {
    const wait = await vxnetctl('ipam', 'wait', '64', '--timeout', '20s');
    expect(wait.code, wait.stderr + wait.stdout).toBe(0);
    const status = await readStatus(etcd, 'router', '64');
    expect(status).toMatchObject({ state: 'ready', ipam: { prefix } });
    expect(status.ipam.revision).toBeGreaterThan(0);
    const onBridge = await addresses(routerNs(), 'br64');
    expect(onBridge.map((a) => `${a.local}/${a.prefixlen}`).sort()).toEqual([expect.stringMatching(/^fe80::/), `${routerAddress}/64`].sort());
    expect(await addresses(dc.host('hv1').ns, 'br64'), 'hypervisors keep their bridges without addresses').toEqual([]);
    const config = readFileSync(join(router.radvdDir, 'radvd.conf'), 'utf8');
    expect(config).toContain(`prefix ${prefix} {`);
    expect(config).toContain('AdvLinkMTU 1430;');
    expect(config).toContain('RDNSS 2001:db8::53 { };');
    expect(radvdPid(router.radvdDir)).toBeGreaterThan(0);
    expect((await sh(routerNs(), 'cat', '/proc/sys/net/ipv6/conf/all/forwarding')).trim()).toBe('1');
  }, 30_000);

  it('VMs take their address by SLAAC (EUI-64 of their MAC) and the MTU from the advertisement, and reach the router and each other', async () => {
    for (const [name, mac] of Object.entries(MACS)) {
      const result = await vxnetctl('address', '64', mac);
      expect(result.code, result.stderr).toBe(0);
      slaac[name] = result.stdout.trim();
    }
    expect(slaac.vm1).toBe(slaacAddress(parseIpv6Prefix(prefix), parseMac(MACS.vm1)));
    expect(slaac.vm1).toMatch(/:5054:ff:fed6:c2a9$/);
    const vm1 = await slaacVm('hv1', 'vm1');
    const vm2 = await slaacVm('hv2', 'vm2');
    for (const vm of [vm1, vm2]) {
      // Usable once duplicate address detection is done (no longer tentative).
      await waitFor(async () => (await addresses(vm.ns, 'eth0')).some((a) => a.local === slaac[vm.name] && !a.tentative), `${vm.name} has its SLAAC address`, 15_000, 200);
      await waitFor(async () => (await sh(vm.ns, 'cat', '/proc/sys/net/ipv6/conf/eth0/mtu')).trim() === '1430', `${vm.name} took MTU 1430 from the advertisement`, 15_000, 200);
    }
    expect(await dc.ping(vm1, routerAddress, { count: 3, timeoutS: 3 })).toBe(true);
    expect(await dc.ping(vm1, slaac.vm2!, { count: 3, timeoutS: 3 })).toBe(true);
    // The advertisements that configured the VMs crossed the hypervisors' bridges too: those took nothing from them.
    for (const host of ['hv1', 'hv2']) expect(await addresses(dc.host(host).ns, 'br64'), `${host}'s br64 has no address`).toEqual([]);
    // Full overlay MTU, unfragmented: the MTU the VMs learnt is the one that fits.
    expect(await dc.ping(vm2, slaac.vm1!, { size: 1430 - 48, dontFragment: true, count: 2, timeoutS: 3 })).toBe(true);
  }, 60_000);

  it("no vxnetd listener is reachable from a VM through the router's tenant addresses", async () => {
    const vm = vms.vm1!;
    for (const target of [`[${routerAddress}]:9730`, `[${dc.host('router').underlayAddress}]:9730`]) {
      // Exit 0 only with an HTTP answer; an error, a closed connection or no answer in 3 s is 7.
      const script = `setTimeout(()=>process.exit(7),3000);fetch('http://${target}/metrics').then((r)=>{console.log(r.status);process.exit(0)},(e)=>{console.log(String(e.cause??e));process.exit(7)})`;
      const result = await dc.exec(vm.ns, [process.execPath, '-e', script]);
      expect(result.code, `GET http://${target}/metrics from a VM: ${result.stdout}`).toBe(7);
    }
  }, 30_000);

  it('a router address deleted by hand is put back within a second; a foreign address on the bridge is left alone', async () => {
    const foreign = formatIpv6(parseIpv6Prefix(prefix).address | 0x99n);
    await sh(routerNs(), 'ip', 'addr', 'add', `${foreign}/64`, 'dev', 'br64', 'nodad');
    await sh(routerNs(), 'ip', 'addr', 'del', `${routerAddress}/64`, 'dev', 'br64');
    const ms = await elapsedUntil(async () => (await addresses(routerNs(), 'br64')).some((a) => a.local === routerAddress), 'router address back', 5_000);
    expect(ms).toBeLessThan(1_000);
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await addresses(routerNs(), 'br64')).some((a) => a.local === foreign), 'the foreign address stays').toBe(true);
    await sh(routerNs(), 'ip', 'addr', 'del', `${foreign}/64`, 'dev', 'br64');
    // The address put back goes through duplicate address detection again before VMs can reach it.
    await waitFor(async () => (await addresses(routerNs(), 'br64')).some((a) => a.local === routerAddress && !a.tentative), 'router address usable', 5_000, 100);
    expect(await dc.ping(vms.vm1!, routerAddress, { count: 2, timeoutS: 3 })).toBe(true);
  }, 30_000);

  it('radvd outlives a killed agent; the next agent adopts it and changes nothing; a dead radvd is started again', async () => {
    const pid = radvdPid(router.radvdDir)!;
    await router.stop('SIGKILL');
    expect(radvdPid(router.radvdDir), 'radvd still advertising').toBe(pid);
    expect(await dc.ping(vms.vm1!, routerAddress, { count: 2, timeoutS: 3 })).toBe(true);

    router = await dc.startRouter('router');
    await router.waitReady();
    await router.waitForLog((line) => /adopted the running radvd/.test(line.msg ?? ''), 5_000);
    await vxnetctl('ipam', 'wait', '64', '--timeout', '10s');
    const samples = await scrape(router);
    expect(radvdPid(router.radvdDir), 'no second radvd').toBe(pid);
    for (const op of ['addr_add', 'addr_del', 'create', 'change', 'delete']) expect(sumSamples(samples, 'vxnetd_netlink_requests_total', { op }), op).toBe(0);

    process.kill(pid, 'SIGKILL');
    await waitFor(async () => (radvdPid(router.radvdDir) ?? pid) !== pid || undefined, 'radvd started again', 10_000, 100);
    await waitFor(async () => sumSamples(await scrape(router), 'vxnetd_radvd_restarts_total') === 1 || undefined, 'the restart counted', 5_000, 100);
    expect(sumSamples(await scrape(router), 'vxnetd_router_prefixes_advertised')).toBe(1);
  }, 60_000);

  it('ipam delete withdraws the prefix (zero lifetimes) and removes the router address; the network stays a layer-2 network', async () => {
    const deleted = await vxnetctl('ipam', 'delete', '64');
    expect(deleted.code, deleted.stderr).toBe(0);
    await waitFor(async () => !(await addresses(routerNs(), 'br64')).some((a) => a.local === routerAddress) || undefined, 'router address gone', 5_000, 100);
    const withdrawn = new RegExp(`prefix ${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} \\{[^}]*AdvValidLifetime 0;`);
    await waitFor(async () => withdrawn.test(readFileSync(join(router.radvdDir, 'radvd.conf'), 'utf8')) || undefined, 'the prefix advertised with zero lifetimes', 5_000, 100);
    const status = await waitFor(async () => {
      const s = await readStatus(etcd, 'router', '64');
      return s && s.ipam === undefined ? s : undefined;
    }, 'no ipam report', 5_000, 100);
    expect(status.state).toBe('ready');
    expect(await dc.link(dc.host('hv1').ns, 'br64'), 'the network itself stays').toBeDefined();
  }, 30_000);

  it('a second router takes number 2 and <prefix>::2; the entry is available only once both serve it', async () => {
    expect((await vxnetctl('network', 'create', '--vni', '66')).code).toBe(0);
    const router2 = await dc.startRouter('router2');
    await router2.waitReady();
    const created = await vxnetctl('ipam', 'create', '66');
    expect(created.code, created.stderr).toBe(0);
    const wait = await vxnetctl('ipam', 'wait', '66', '--timeout', '20s', '--json');
    expect(wait.code, wait.stderr + wait.stdout).toBe(0);
    const subnet = parseIpv6Prefix((JSON.parse(created.stdout) as { prefix: string }).prefix);
    expect((await addresses(dc.host('router2').ns, 'br66')).map((a) => a.local)).toContain(formatIpv6(subnet.address | 2n));
    expect((await addresses(routerNs(), 'br66')).map((a) => a.local)).toContain(formatIpv6(subnet.address | 1n));
    for (const host of ['router', 'router2']) expect(await readStatus(etcd, host, '66')).toMatchObject({ state: 'ready', ipam: { prefix: subnet.text } });
    expect(await etcd.getAll().prefix('/v1/routers/').strings()).toEqual({
      '/v1/routers/1': '{"host":"router"}',
      '/v1/routers/2': '{"host":"router2"}',
    });
  }, 60_000);

  it('an address another node already uses fails duplicate address detection: reported, the entry not available, served once the other one goes', async () => {
    expect((await vxnetctl('network', 'create', '--vni', '65')).code).toBe(0);
    await waitFor(async () => (await dc.link(dc.host('hv1').ns, 'br65')) !== undefined || undefined, 'br65 on hv1');
    const squatter = await dc.addVm('hv1', 'br65', 'squat', 'fd00:98::1');
    const created = await vxnetctl('ipam', 'create', '65');
    expect(created.code, created.stderr).toBe(0);
    const subnet = parseIpv6Prefix((JSON.parse(created.stdout) as { prefix: string }).prefix);
    const taken = formatIpv6(subnet.address | 1n);
    // A race with the router would be lost by one side or the other: the VM claims it first, DAD done.
    await sh(squatter.ns, 'ip', 'addr', 'add', `${taken}/64`, 'dev', 'eth0', 'nodad');
    const status = await waitFor(async () => {
      const s = await readStatus(etcd, 'router', '65');
      return s?.ipam?.reason?.includes('failed duplicate address detection') ? s : undefined;
    }, 'the duplicate reported in the status of router', 15_000, 200);
    expect(status.state).toBe('error');
    const notYet = await vxnetctl('ipam', 'wait', '65', '--timeout', '2s');
    expect(notYet.code, 'not available while router cannot serve it').toBe(6);
    expect(notYet.stderr + notYet.stdout).toMatch(/router\b/);

    await sh(squatter.ns, 'ip', 'addr', 'del', `${taken}/64`, 'dev', 'eth0');
    const wait = await vxnetctl('ipam', 'wait', '65', '--timeout', '90s');
    expect(wait.code, wait.stderr + wait.stdout).toBe(0);
    expect(await readStatus(etcd, 'router', '65')).toMatchObject({ state: 'ready', ipam: { prefix: subnet.text } });
  }, 120_000);
});
