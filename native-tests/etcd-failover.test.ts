/**
 * Issue 17, item 8: a 3-member etcd cluster in the fabric namespace, two agents given all three
 * endpoints. Each member in turn is killed (SIGKILL) — so at some point the one each agent is
 * talking to — while networks are written through the survivors with the real vxnetctl, also
 * given all three endpoints; every write must reach both agents within a few seconds (and then
 * their kernels), and etcd must never answer the clients' keepalive pings with too_many_pings.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DataCentre, waitFor, type AgentHandle } from './harness/datacentre.js';
import { runCommand, TrackedProcess } from './harness/processes.js';
import { sleep } from './harness/wait.js';

const VXNETCTL = fileURLToPath(new URL('../dist/cli/vxnetctl.js', import.meta.url));
const MEMBERS = 3;
/** "Within a few seconds": the budget for a write to reach both agents while a member is down. */
const RECEIVED_WITHIN_MS = 10_000;
/**
 * The kernel's part comes on top, with its own budget. It is milliseconds on a quiet machine, but
 * the RTNL lock every device change needs can be held for 5–20 s by others on a shared machine:
 * other test runs' namespaces torn down by the kernel in the background, say (meanwhile a bridge
 * created and deleted in a namespace of its own took 17 s). Every failure of this test reproduced
 * here was that, with the agents connected and the change in hand ("no answer from the kernel in
 * 5000 ms"), not etcd failover: the budget for the write to show on both hosts covered both.
 */
const KERNEL_WITHIN_MS = 60_000;
/** Four keepalive intervals of 5 s: with pings too soon, etcd's GOAWAY comes after the third. */
const QUIET_MS = 20_000;
const IDLE_WATCH = fileURLToPath(new URL('./probes/idle-watch.ts', import.meta.url));

describe('etcd failover: each member of three killed in turn', () => {
  let dc: DataCentre;
  const agents: Record<string, AgentHandle> = {};
  const hosts = ['h1', 'h2'];

  const vxnetctl = (...args: string[]) =>
    runCommand([process.execPath, VXNETCTL, ...args], {
      timeoutMs: 20_000,
      env: { PATH: process.env.PATH, VXNETD_ETCD_ENDPOINTS: dc.etcdEndpoints.join(','), VXNETD_PREFIX: dc.prefix },
    });
  /**
   * The revision vxnetctl wrote a network at (read from a member that is up): its key's, or for a
   * delete its quarantine record's, written in the same transaction.
   */
  const revisionOfWrite = async (hex: string, deleted: boolean, up: number) => {
    const client = new Etcd3({ hosts: [dc.etcdEndpoints[up]!] });
    try {
      const { kvs } = await client.get(`${dc.prefix}/${deleted ? 'deleted' : 'networks'}/${hex}`).exec();
      return Number(kvs[0]!.mod_revision);
    } finally {
      client.close();
    }
  };
  /** Whether an agent has the write (`vxnetd --log-level debug`): as a watched change, or in a list at its revision or later. */
  const received = (host: string, hex: string, deleted: boolean, revision: number) =>
    agents[host]!.logs().some(
      (line: { msg?: string; collection?: string; vni?: string; deleted?: boolean; revision?: number }) =>
        (line.msg === 'etcd change' && line.collection === 'networks' && line.vni === hex && line.deleted === deleted) ||
        (line.msg === 'etcd list' && (line.revision ?? 0) >= revision),
    );
  /** Both agents get the write from etcd within the budget, and their kernels realise it. */
  const realised = async (hex: string, present: boolean, what: string, since: number, up: number) => {
    const explain = (error: Error) => {
      throw new Error(`${error.message}\nthe agents since ${new Date(since).toISOString()}:\n${agentsSince(since).join('\n')}`);
    };
    const revision = await revisionOfWrite(hex, !present, up);
    await waitFor(async () => hosts.every((host) => received(host, hex, !present, revision)), `${what}: the write received by both agents`, RECEIVED_WITHIN_MS, 100).catch(explain);
    await waitFor(() => onBothHosts(hex, present), `${what}: the devices on both hosts`, KERNEL_WITHIN_MS, 100).catch(explain);
  };
  const devicesOf = async (host: string) => new Set((await dc.links(dc.host(host).ns)).map((link: { ifname: string }) => link.ifname));
  const onBothHosts = async (hex: string, present: boolean) => {
    for (const host of hosts) {
      const devices = await devicesOf(host);
      if (devices.has(`vxlan${hex}`) !== present || devices.has(`br${hex}`) !== present) return false;
    }
    return true;
  };

  /**
   * Everything the agents logged since `since` (not only about etcd: a stall may be elsewhere), and
   * whether each still runs, to tell in a failure where the time went.
   */
  const agentsSince = (since: number) =>
    hosts.flatMap((host) => [
      `${host}: ${isRunning(agents[host]!.pid) ? 'running' : 'EXITED'}`,
      ...agents[host]!.logs()
        .filter((line: { time?: number }) => line.time === undefined || line.time >= since)
        .map((line: { time?: number; msg?: string; endpoint?: string; err?: string; reason?: string; raw?: string }) =>
          `${host} ${line.time === undefined ? '' : new Date(line.time).toISOString()} ${line.msg ?? line.raw ?? ''} ${line.endpoint ?? ''} ${line.err ?? line.reason ?? ''}`,
        ),
    ]);

  beforeAll(async () => {
    dc = await DataCentre.create({ hosts, etcdMembers: MEMBERS });
    for (const host of hosts) agents[host] = await dc.startAgent(host, ['--log-level', 'debug']);
    for (const host of hosts) await agents[host]!.waitReady();
  });

  afterAll(async () => {
    await dc?.destroy();
  });

  it('writes through the survivors reach both hosts within the budget, whichever member dies', async () => {
    for (let member = 0; member < MEMBERS; member++) {
      const killedAt = Date.now();
      await dc.killEtcdMember(member);
      try {
        for (let write = 0; write < 2; write++) {
          const created = await vxnetctl('network', 'create', '--description', `written while member ${member} is down`);
          expect(created.code, created.stderr).toBe(0);
          const { vni } = JSON.parse(created.stdout) as { vni: string };
          await realised(vni, true, `network ${vni} with member ${member} down`, killedAt, (member + 1) % MEMBERS);
        }
      } finally {
        // Also after a failure: the next test needs every member.
        await dc.startEtcdMember(member);
      }
    }
    // The agents did lose their member on the way (otherwise this test proved nothing) …
    const endpointLost = (line: { msg?: string; endpoint?: string }) => /etcd (watch broken|unavailable)/.test(line.msg ?? '') && dc.etcdEndpoints.includes(line.endpoint ?? '');
    for (const host of hosts) expect(agents[host]!.logs().some(endpointLost), `${host} lost its etcd member at least once`).toBe(true);
    // … and a delete through a cluster that had every member restarted is applied too.
    const listed = await vxnetctl('network', 'list', '--json');
    const [first] = JSON.parse(listed.stdout) as Array<{ vni: string }>;
    const deletedAt = Date.now();
    expect((await vxnetctl('network', 'delete', first!.vni)).code).toBe(0);
    await realised(first!.vni, false, `network ${first!.vni} deleted`, deletedAt, 0);
  });

  it('an agent whose member lost its cluster is not ready within seconds (require-leader), and is ready again once a quorum is back', async () => {
    // The member each agent talks to, from its established connections to etcd's client port.
    const memberOf = async (host: string) => {
      const result = await dc.exec(dc.host(host).ns, ['ss', '-Htn', 'state', 'established', '( dport = :2379 )']);
      const peers = new Set(result.stdout.trim().split('\n').filter(Boolean).map((line) => line.trim().split(/\s+/).at(-1)!.replace(/:2379$/, '')));
      const members = dc.etcdEndpoints.map((endpoint, member) => (peers.has(new URL(endpoint).hostname) ? member : -1)).filter((member) => member >= 0);
      return members.length === 1 ? members[0]! : undefined;
    };
    const ready = async (host: string) => (await fetch(`${agents[host]!.metricsUrl}/readyz`, { signal: AbortSignal.timeout(2_000) }).catch(() => undefined))?.status === 200;
    for (const host of hosts) await agents[host]!.waitReady();
    let survivor: number | undefined;
    await waitFor(async () => (survivor = await memberOf('h1')) !== undefined, 'h1 on one etcd member', 10_000);
    const killed = dc.etcdEndpoints.map((_, member) => member).filter((member) => member !== survivor);
    const brokenBefore = agents.h1!.logs().length;
    const down = new Set<number>();
    for (const member of killed) {
      await dc.killEtcdMember(member);
      down.add(member);
    }
    try {
      // etcd ends require-leader streams after three election timeouts without a leader (~3 s).
      // Without the flag the survivor keeps the watch open; what ended it then, ~15 s later, was
      // etcd3 dropping the client's connections after the lease keepalive failed ("Connection
      // dropped"): a side effect, and three times slower.
      for (const host of hosts) await waitFor(async () => !(await ready(host)), `${host} not ready with one member of three left`, 20_000, 200);
      const reasons = agents.h1!.logs().slice(brokenBefore).filter((line: { msg?: string }) => /etcd watch broken/.test(line.msg ?? ''));
      expect(reasons.map((line: { reason?: string }) => line.reason).join('\n')).toMatch(/no leader/);
      await dc.startEtcdMember(killed[0]!);
      down.delete(killed[0]!);
      for (const host of hosts) await waitFor(() => ready(host), `${host} ready again with a quorum of two`, 20_000, 200);
      const writtenAt = Date.now();
      const created = await vxnetctl('network', 'create', '--description', 'written after the quorum came back');
      expect(created.code, created.stderr).toBe(0);
      const { vni } = JSON.parse(created.stdout) as { vni: string };
      await realised(vni, true, `network ${vni} after the quorum came back`, writtenAt, survivor!);
    } finally {
      // Also after a failure: the next test needs every member.
      for (const member of down) await dc.startEtcdMember(member);
    }
  });

  it("etcd never answers the clients' keepalive pings with too_many_pings", async () => {
    // An idle watch on every member, from a client built as the agents' are: only pings flow, and
    // etcd sends GOAWAY after the third that comes sooner than its minimum (5 s). (etcd 3.4 does
    // not log it; grpc-js does, on stderr.)
    const probes = dc.etcdEndpoints.map((endpoint) => startIdleWatch(endpoint));
    try {
      await Promise.all(probes.map((probe) => waitFor(async () => probe.stdout.includes('watching\n'), 'the idle watch to be confirmed', 15_000)));
      await sleep(QUIET_MS);
      for (const probe of probes) expect({ stdout: probe.stdout, stderr: probe.stderr }).toEqual({ stdout: 'watching\n', stderr: '' });
    } finally {
      await Promise.all(probes.map((probe) => probe.stop()));
    }
    for (const host of hosts) {
      const logs = agents[host]!.logs();
      const excess = logs.flatMap((line: { raw?: string }, index: number) => (/excess pings|too_many_pings/.test(line.raw ?? '') ? [index] : []));
      // With the line before each, to tell when it came.
      expect(excess.map((index: number) => [logs[index - 1], logs[index]]), host).toEqual([]);
    }
  });
});

function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** native-tests/probes/idle-watch.ts on `endpoint`, its output collected; stop() ends it by PID and waits. */
function startIdleWatch(endpoint: string) {
  const tracked = new TrackedProcess(spawn(process.execPath, ['--import', 'tsx', IDLE_WATCH, endpoint], { stdio: ['pipe', 'pipe', 'pipe'] }));
  const probe = {
    stdout: '',
    stderr: '',
    stop: () => tracked.terminate('SIGTERM', 5_000),
  };
  tracked.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (probe.stdout += chunk));
  tracked.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (probe.stderr += chunk));
  return probe;
}
