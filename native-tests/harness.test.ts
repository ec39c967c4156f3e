/**
 * Proves the harness topology without vxnetd: the VXLAN and bridge devices
 * the agent would create are made by hand with `ip`, so that a failure here
 * points at the harness (or the machine), never at the agent.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { AgentProcess } from './harness/agent.js';
import { DataCentre, type VmHandle } from './harness/datacentre.js';
import { requirePrograms, runCommand } from './harness/processes.js';

const BRIDGE = 'br64';
const VXLAN = 'vxlan64';
/** IPv6 underlay MTU 1500 minus 70 bytes of VXLAN-over-IPv6 encapsulation. */
const OVERLAY_MTU = 1430;
/** An echo request of payload n is an IPv6 packet of n + 40 (IPv6) + 8 (ICMPv6) bytes. */
const FULL_SIZE_PAYLOAD = OVERLAY_MTU - 48;

describe('native test harness, with hand-made overlay devices', () => {
  let dc: DataCentre;
  const vms: VmHandle[] = [];

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts: ['h1', 'h2'] });
    for (const [index, host] of dc.hosts().entries()) {
      for (const cmd of [
        ['link', 'add', 'name', BRIDGE, 'type', 'bridge'],
        ['link', 'add', 'name', VXLAN, 'type', 'vxlan', 'id', '100', 'group', 'ff05::64', 'dev', 'u0', 'ttl', '5', 'dstport', '4789'],
        ['link', 'set', VXLAN, 'master', BRIDGE],
        ['link', 'set', BRIDGE, 'up'],
        ['link', 'set', VXLAN, 'up'],
      ]) {
        const result = await dc.exec(host.ns, ['ip', ...cmd]);
        expect(result, `ip ${cmd.join(' ')} in ${host.ns}`).toMatchObject({ code: 0 });
      }
      vms.push(await dc.addVm(host.name, BRIDGE, `vm${index + 1}`, `2001:db8:64::${index + 1}`));
    }
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('gives every host an uplink u0 on the fabric, with the underlay MTU', async () => {
    for (const host of dc.hosts()) {
      const u0 = await dc.link(host.ns, 'u0');
      expect(u0).toMatchObject({ ifname: 'u0', mtu: 1500, operstate: 'UP' });
      const fabricPort = await dc.link(dc.fabricNs, host.fabricPort);
      expect(fabricPort).toMatchObject({ master: 'fab', mtu: 1500 });
    }
    const fabric = await dc.link(dc.fabricNs, 'fab');
    expect(fabric.linkinfo.info_data.mcast_snooping).toBe(0);
  });

  it('leaves the kernel to size the hand-made vxlan and bridge to the overlay MTU', async () => {
    const h1 = dc.host('h1');
    expect(await dc.link(h1.ns, VXLAN)).toMatchObject({ mtu: OVERLAY_MTU, master: BRIDGE, linkinfo: { info_kind: 'vxlan' } });
    expect(await dc.link(h1.ns, BRIDGE)).toMatchObject({ mtu: OVERLAY_MTU, linkinfo: { info_kind: 'bridge' } });
    expect(await dc.link(h1.ns, vms[0]!.hostPort)).toMatchObject({ master: BRIDGE, operstate: 'UP' });
  });

  it('pings between VMs on different hosts, both ways, through the VXLAN', async () => {
    const [vm1, vm2] = vms as [VmHandle, VmHandle];
    expect(await dc.ping(vm1, vm2.address)).toBe(true);
    expect(await dc.ping(vm2, vm1.address)).toBe(true);

    // The replies prove the path works; the counters prove it is the overlay.
    const stats = await dc.exec(dc.host('h1').ns, ['ip', '-s', '-j', 'link', 'show', 'dev', VXLAN]);
    const [vxlan] = JSON.parse(stats.stdout);
    expect(vxlan.stats64.tx.packets).toBeGreaterThan(0);
    expect(vxlan.stats64.rx.packets).toBeGreaterThan(0);
  });

  it('carries a full overlay-MTU packet unfragmented, and drops one a byte larger', async () => {
    const [vm1, vm2] = vms as [VmHandle, VmHandle];
    expect(await dc.ping(vm1, vm2.address, { size: FULL_SIZE_PAYLOAD, dontFragment: true })).toBe(true);
    expect(await dc.ping(vm2, vm1.address, { size: FULL_SIZE_PAYLOAD, dontFragment: true })).toBe(true);
    // The VM's own MTU is 1500, so this leaves the VM and is dropped by the
    // bridge in front of the 1430-byte vxlan: the overlay never fragments.
    expect(await dc.ping(vm1, vm2.address, { size: FULL_SIZE_PAYLOAD + 1, dontFragment: true, timeoutS: 1 })).toBe(false);
  });

  it('reaches etcd from the test process', async () => {
    const etcd = await dc.etcd();
    await etcd.put(`${dc.prefix}/harness-check`).value('hello');
    expect(await etcd.get(`${dc.prefix}/harness-check`).string()).toBe('hello');
  });

  it('reaches etcd from inside a host namespace', async () => {
    const health = await dc.exec(dc.host('h2').ns, [
      process.execPath,
      '-e',
      `fetch(${JSON.stringify(`${dc.etcdEndpoint}/health`)}).then(r => r.text()).then(t => console.log(t))`,
    ]);
    expect(health.code).toBe(0);
    expect(JSON.parse(health.stdout)).toEqual({ health: 'true' });
  });

  it('survives an etcd restart on the same data', async () => {
    const before = dc.etcdPid;
    await dc.restartEtcd();
    expect(dc.etcdPid).toBeDefined();
    expect(dc.etcdPid).not.toBe(before);
    const etcd = await dc.etcd();
    expect(await etcd.get(`${dc.prefix}/harness-check`).string()).toBe('hello');
  });

  it('runs an agent-like process in a host namespace and follows its logs and readiness', async () => {
    // A stand-in for vxnetd (not built in this test): serves /readyz on the
    // host's underlay address after a delay, logs JSON and one raw line.
    const host = dc.host('h1');
    const script = `
      const http = require('node:http');
      const log = (msg) => console.log(JSON.stringify({ level: 30, msg }));
      let ready = false;
      http.createServer((req, res) => { res.statusCode = req.url === '/readyz' && ready ? 200 : 503; res.end(); })
        .listen(9730, ${JSON.stringify(host.underlayAddress)}, () => setTimeout(() => { ready = true; log('ready'); }, 300));
      console.log('not json');
      process.on('SIGTERM', () => { log('bye'); process.exit(0); });
    `;
    const agent = new AgentProcess({
      ipBinary: requirePrograms().ip,
      netns: host.ns,
      host: host.name,
      command: [process.execPath, '-e', script],
      env: { PATH: process.env.PATH },
      metricsUrl: `http://[${host.underlayAddress}]:9730`,
      onSpawn: () => {},
    });
    try {
      await agent.waitReady(10_000);
      expect(await agent.waitForLog((l) => l.msg === 'ready')).toMatchObject({ level: 30 });
      expect(agent.logs()).toContainEqual({ raw: 'not json', stream: 'stdout' });
      expect(await agent.stop()).toEqual({ code: 0, signal: null });
      // Everything the process wrote before exiting has been read by then.
      expect(agent.logs().at(-1)).toMatchObject({ msg: 'bye' });
      await expect(agent.waitForLog((l) => l.msg === 'never', 5_000)).rejects.toThrow(/exited \(code 0\)/);
    } finally {
      await agent.stop('SIGKILL');
    }
  });

  it('gives concurrent data centres distinct ids, names and etcds', async () => {
    const pair = await Promise.all([DataCentre.create({ hosts: ['a'] }), DataCentre.create({ hosts: ['a'] })]);
    try {
      const [first, second] = pair;
      expect(first.id).not.toBe(dc.id);
      expect(first.id).not.toBe(second.id);
      expect(first.host('a').ns).not.toBe(second.host('a').ns);
      for (const other of pair) {
        const etcd = await other.etcd();
        expect(await etcd.get(`${dc.prefix}/harness-check`).string()).toBeNull();
      }
    } finally {
      await Promise.all(pair.map((other) => other.destroy()));
    }
  });

  it('destroy() removes every namespace, link, process and file it created, and can be called again', async () => {
    const etcdPid = dc.etcdPid!;
    expect(etcdPid).toBeGreaterThan(0);
    const endpoint = dc.etcdEndpoint;

    await dc.destroy();
    await dc.destroy();

    const namespaces = await runCommand(['ip', 'netns', 'list']);
    expect(namespaces.stdout.split('\n').filter((line) => line.includes(`-${dc.id}`))).toEqual([]);
    expect((await runCommand(['ip', 'link', 'show', 'dev', `vxr${dc.id}`])).code).not.toBe(0);
    expect(() => process.kill(etcdPid, 0)).toThrow(/ESRCH/);
    await expect(fetch(`${endpoint}/health`, { signal: AbortSignal.timeout(1_000) })).rejects.toThrow();
    expect(readdirSync(tmpdir()).filter((name) => name.startsWith(`vxnetd-native-${dc.id}-`))).toEqual([]);
  });
});
