/**
 * A small data centre made of network namespaces, for tests that need root:
 * a fabric (the underlay switch, with a real etcd on it), hosts with an
 * uplink into the fabric, and VMs plugged into bridges on the hosts. See
 * README.md next to this file for the picture.
 *
 * Every name and address carries the data centre's `id`, so concurrent runs
 * never collide, and everything created is recorded as it is created, so
 * `destroy()` undoes exactly that and nothing else.
 */
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Etcd3 } from 'etcd3';
import { AgentProcess, type AgentHandle } from './agent.js';
import { EtcdServer } from './etcd-server.js';
import { radvdPid, stopRadvd } from './radvd.js';
import { registerForLastResortCleanup, unregisterFromLastResortCleanup } from './last-resort-cleanup.js';
import { describeFailure, requireOptionalProgram, requirePrograms, runCommand, type CommandResult, type Programs, type TrackedProcess } from './processes.js';

export { waitFor } from './wait.js';
export type { AgentHandle } from './agent.js';
export type { CommandResult, ExitStatus } from './processes.js';

export interface HostHandle {
  name: string;
  /** The host's network namespace, where the agent runs. */
  ns: string;
  /** Address of the host's uplink `u0`, fd00:<id>::<n>, without prefix length. */
  underlayAddress: string;
  /** The host's port on the fabric bridge (in the fabric namespace): set it down to cut the host off. */
  fabricPort: string;
}

export interface VmHandle {
  name: string;
  /** The VM's network namespace; its interface is `eth0`. */
  ns: string;
  /** The VM's address, without prefix length (it has a /64). */
  address: string;
  host: string;
  /** The VM's port in the host namespace, enslaved to the bridge it was added to. */
  hostPort: string;
}

export interface DataCentreOptions {
  /** Host names, default ['h1', 'h2']; lowercase letters, digits and '-', at most 12 characters. */
  hosts?: string[];
  /** MTU of every host's uplink `u0` (and its fabric port), default 1500. */
  underlayMtu?: number;
  /** etcd key prefix handed to the agents, default '/v1'. */
  prefix?: string;
  /** Members of the etcd cluster, each on its own address of the fabric bridge; default 1. */
  etcdMembers?: number;
}

export interface PingOptions {
  /** ICMP payload bytes (ping -s); the IPv6 packet is size + 48 bytes. */
  size?: number;
  /** Echo requests to send; success means at least one reply. Default 1. */
  count?: number;
  /** Forbid fragmentation (ping -M do). */
  dontFragment?: boolean;
  /** Seconds to wait for a reply (ping -W), default 2. */
  timeoutS?: number;
}

const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const AGENT_ENTRY = join(REPO_ROOT, 'dist/cli/vxnetd.js');

const UNDERLAY_DEVICE = 'u0';
const VM_DEVICE = 'eth0';
const FABRIC_BRIDGE = 'fab';
const FABRIC_ROOT_PORT = 'root';
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;
const METRICS_PORT = 9730;
/** Host and VM names end up in interface names (15 bytes at most), e.g. `vm-<name>`. */
const SHORT_NAME = /^[a-z0-9][a-z0-9-]{0,11}$/;
const ID_ATTEMPTS = 20;

class NameInUseError extends Error {}

/** How to delete one thing this data centre created: `ip <args>`; `missing` matches "already gone". */
interface Undo {
  what: string;
  ipArgs: string[];
  missing: RegExp;
}

export class DataCentre {
  /** Four hex digits (no leading zero, so `fd00:<id>::` is written the same way everywhere). */
  readonly id: string;
  readonly prefix: string;
  readonly fabricNs: string;
  /** The first etcd member's client URL (the only one, unless `etcdMembers` was given). */
  readonly etcdEndpoint: string;
  /** Every etcd member's client URL, in member order: what the agents are given. */
  readonly etcdEndpoints: string[];
  /** The root namespace's address on the fabric: how the test process reaches etcd and the agents. */
  readonly testAddress: string;

  private readonly programs: Programs;
  private readonly hostsByName = new Map<string, HostHandle>();
  private readonly vmsByName = new Map<string, VmHandle>();
  private readonly rootLink: string;

  // What this data centre created, in creation order; destroy() undoes
  // exactly these, newest first. `creating` holds what a running `ip` command
  // may be creating right now, for the last-resort cleanup on sudden exit.
  private readonly created: Undo[] = [];
  private readonly creating = new Set<Undo>();
  private readonly processes = new Set<TrackedProcess>();
  private readonly etcdClients: Etcd3[] = [];
  private tmpDir: string | undefined;

  private readonly etcdServers: EtcdServer[] = [];
  private readonly radvdDirs: string[] = [];
  private currentEtcdClient: Etcd3 | undefined;
  private destruction: Promise<void> | undefined;

  private constructor(id: string, prefix: string, programs: Programs, etcdMembers: number) {
    this.id = id;
    this.prefix = prefix;
    this.programs = programs;
    this.fabricNs = `vxf-${id}`;
    this.rootLink = `vxr${id}`;
    this.etcdEndpoints = Array.from({ length: etcdMembers }, (_, member) => `http://[${this.etcdAddress(member)}]:${ETCD_CLIENT_PORT}`);
    this.etcdEndpoint = this.etcdEndpoints[0]!;
    this.testAddress = `fd00:${id}::fe`;
  }

  static async create(opts: DataCentreOptions = {}): Promise<DataCentre> {
    const programs = requirePrograms();
    const hostNames = opts.hosts ?? ['h1', 'h2'];
    const underlayMtu = opts.underlayMtu ?? 1500;
    const etcdMembers = opts.etcdMembers ?? 1;
    if (!Number.isInteger(etcdMembers) || etcdMembers < 1 || etcdMembers > 5) throw new Error(`1 to 5 etcd members, not ${etcdMembers}`);
    validateNames('host', hostNames);
    if (hostNames.length < 1 || hostNames.length > 200) throw new Error(`1 to 200 hosts, not ${hostNames.length}`);
    // Below 1280 the kernel turns IPv6 off on the device; 65535 is veth's maximum.
    if (!Number.isInteger(underlayMtu) || underlayMtu < 1280 || underlayMtu > 65535) {
      throw new Error(`underlayMtu must be an integer from 1280 to 65535, not ${underlayMtu}`);
    }

    for (let attempt = 0; attempt < ID_ATTEMPTS; attempt++) {
      const dc = new DataCentre(randomInt(0x1000, 0x10000).toString(16), opts.prefix ?? '/v1', programs, etcdMembers);
      registerForLastResortCleanup(dc);
      try {
        if (!(await dc.claimId())) {
          await dc.destroy();
          continue;
        }
        await dc.build(hostNames, underlayMtu);
        return dc;
      } catch (err) {
        await dc.destroy();
        throw err;
      }
    }
    throw new Error(`could not find a free data centre id in ${ID_ATTEMPTS} attempts: leftovers from earlier runs? (ip netns list)`);
  }

  get etcdPid(): number | undefined {
    return this.etcdServers[0]?.pid;
  }

  host(name: string): HostHandle {
    const host = this.hostsByName.get(name);
    if (!host) throw new Error(`no host ${name} in data centre ${this.id} (hosts: ${[...this.hostsByName.keys()].join(', ')})`);
    return host;
  }

  hosts(): HostHandle[] {
    return [...this.hostsByName.values()];
  }

  /** Runs a command inside a namespace (`ip netns exec`); never rejects, look at `code`. Default timeout 30 s. */
  exec(ns: string, cmd: string[], opts: { timeoutMs?: number } = {}): Promise<CommandResult> {
    return this.run([this.programs.ip, 'netns', 'exec', ns, ...cmd], opts.timeoutMs);
  }

  /** `ip -d -j link show` inside `ns`. */
  async links(ns: string): Promise<any[]> {
    const argv = [this.programs.ip, '-n', ns, '-d', '-j', 'link', 'show'];
    const result = await this.run(argv);
    if (result.code !== 0) throw new Error(describeFailure(argv, result));
    return JSON.parse(result.stdout) as any[];
  }

  async link(ns: string, name: string): Promise<any | undefined> {
    return (await this.links(ns)).find((link) => link.ifname === name);
  }

  /**
   * A VM: its own namespace with `eth0` holding `address`/64, whose veth peer
   * `vm-<vmName>` is a port of `bridge` in the host's namespace. The bridge
   * must exist already. `opts.mtu` is set on both ends of the veth, like a
   * hypervisor configuring a tap device and the guest to the same MTU.
   */
  async addVm(host: string, bridge: string, vmName: string, address: string, opts: { mtu?: number } = {}): Promise<VmHandle> {
    this.assertAlive();
    validateNames('VM', [vmName]);
    if (this.vmsByName.has(vmName)) throw new Error(`VM ${vmName} already exists in data centre ${this.id}`);
    const hostNs = this.host(host).ns;
    const vm: VmHandle = { name: vmName, ns: `vxv-${this.id}-${vmName}`, address, host, hostPort: `vm-${vmName}` };
    if (await this.link(hostNs, vm.hostPort)) throw new Error(`${vm.hostPort} already exists in ${hostNs}`);

    await this.addNamespace(vm.ns);
    const mtu = opts.mtu === undefined ? [] : ['mtu', String(opts.mtu)];
    await this.ip('-n', hostNs, 'link', 'add', 'name', vm.hostPort, ...mtu, 'type', 'veth', 'peer', 'name', VM_DEVICE, 'netns', vm.ns, ...mtu);
    await this.ip('-n', hostNs, 'link', 'set', vm.hostPort, 'master', bridge, 'up');
    // nodad: the address is usable at once, no 1-2 s of "tentative".
    await this.ip('-n', vm.ns, 'addr', 'add', `${address}/64`, 'dev', VM_DEVICE, 'nodad');
    await this.ip('-n', vm.ns, 'link', 'set', VM_DEVICE, 'up');
    this.vmsByName.set(vmName, vm);
    return vm;
  }

  /** Pings `to` from inside the VM; true when at least one echo reply came back. */
  async ping(from: VmHandle, to: string, opts: PingOptions = {}): Promise<boolean> {
    const count = opts.count ?? 1;
    const timeoutS = opts.timeoutS ?? 2;
    const cmd = [this.programs.ping, '-6', '-n', '-q', '-c', String(count), '-W', String(timeoutS)];
    if (count > 1) cmd.push('-i', '0.2');
    if (opts.size !== undefined) cmd.push('-s', String(opts.size));
    if (opts.dontFragment) cmd.push('-M', 'do');
    cmd.push(to);
    const result = await this.exec(from.ns, cmd, { timeoutMs: count * 200 + timeoutS * 1_000 + 5_000 });
    return result.code === 0;
  }

  /**
   * Starts vxnetd in a host's namespace with flags pointing at this data
   * centre. A flag given in `args` replaces the harness's default for it.
   * The agent gets a clean environment (PATH plus `env`), so VXNETD_*
   * variables of the shell running the tests cannot change its behaviour.
   */
  async startAgent(host: string, args: string[] = [], env: Record<string, string> = {}): Promise<AgentHandle> {
    this.assertAlive();
    if (!existsSync(AGENT_ENTRY)) throw new Error(`vxnetd is not built (${AGENT_ENTRY} is missing): run \`npm run build\` first`);
    const handle = this.host(host);
    const defaults: Array<[string, string]> = [
      ['--underlay', UNDERLAY_DEVICE],
      ['--hostname', host],
      ['--etcd-endpoints', this.etcdEndpoints.join(',')],
      ['--prefix', this.prefix],
      ['--metrics-listen', `[${handle.underlayAddress}]:${METRICS_PORT}`],
    ];
    const command = [process.execPath, AGENT_ENTRY];
    for (const [flag, value] of defaults) {
      if (flagValue(args, flag) === undefined) command.push(flag, value);
    }
    command.push(...args);
    const metricsListen = flagValue(command, '--metrics-listen')!;

    const agentEnv: NodeJS.ProcessEnv = { PATH: process.env.PATH };
    // Let coverage of the agent be collected when the test run asks for it.
    if (process.env.NODE_V8_COVERAGE) agentEnv.NODE_V8_COVERAGE = process.env.NODE_V8_COVERAGE;
    Object.assign(agentEnv, env);

    return new AgentProcess({
      ipBinary: this.programs.ip,
      netns: handle.ns,
      host,
      command,
      env: agentEnv,
      metricsUrl: metricsUrlFor(metricsListen, handle.underlayAddress),
      onSpawn: (p) => this.track(p),
    });
  }

  /**
   * A client for this data centre's etcd, closed by destroy(). The same client
   * is returned until restartEtcd(), after which a fresh one is made (one that
   * was connected to the old process may sit in gRPC's reconnect backoff).
   */
  async etcd(): Promise<Etcd3> {
    this.assertAlive();
    if (!this.currentEtcdClient) {
      this.currentEtcdClient = new Etcd3({ hosts: this.etcdEndpoints, dialTimeout: 3_000 });
      this.etcdClients.push(this.currentEtcdClient);
    }
    return this.currentEtcdClient;
  }

  /** Signals etcd: SIGSTOP freezes it (connections stay open), SIGCONT thaws it, SIGTERM stops it. */
  stopEtcd(sig: 'SIGSTOP' | 'SIGCONT' | 'SIGTERM'): void {
    this.etcdServers[0]?.signal(sig);
  }

  /**
   * Starts vxnetd as a router (`--role router`) with a radvd directory of its own in this data
   * centre's temporary directory; the radvd it starts is stopped (by the pid in its pid file) when
   * the data centre is destroyed.
   */
  async startRouter(host: string, args: string[] = []): Promise<AgentHandle & { radvdDir: string }> {
    const dir = this.radvdDir(host);
    const agent = await this.startAgent(host, ['--role', 'router', '--radvd-dir', dir, ...args]);
    return Object.assign(agent, { radvdDir: dir });
  }

  /** The radvd directory of a router host (made on first use; radvd reads it as its own user after dropping root). */
  radvdDir(host: string): string {
    const dir = join(this.tmpDir!, `radvd-${host}`);
    if (!this.radvdDirs.includes(dir)) {
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      chmodSync(this.tmpDir!, 0o755);
      this.radvdDirs.push(dir);
    }
    return dir;
  }

  /**
   * An underlay without multicast: the fabric bridge drops every frame to a VXLAN group (ff05::/16),
   * while neighbour discovery (ff02::1:ff…) and unicast keep flowing. Gone with the fabric namespace.
   */
  async blockUnderlayMulticast(): Promise<void> {
    const nft = requireOptionalProgram('nft', 'nftables');
    const rules = ['add table bridge vxnetd_test', 'add chain bridge vxnetd_test forward_filter { type filter hook forward priority 0 ; }', 'add rule bridge vxnetd_test forward_filter ip6 daddr ff05::/16 counter drop'];
    for (const rule of rules) {
      const argv = [nft, ...rule.split(' ')];
      const result = await this.exec(this.fabricNs, argv);
      if (result.code !== 0) throw new Error(describeFailure(argv, result));
    }
  }

  /** Kills one member of the etcd cluster (SIGKILL) and waits until it is gone. */
  async killEtcdMember(member: number): Promise<void> {
    await this.etcdMember(member).kill();
  }

  /** Starts a killed member again on its data dir and waits until it is healthy (back in the cluster). */
  async startEtcdMember(member: number): Promise<void> {
    this.assertAlive();
    await this.etcdMember(member).start();
  }

  /**
   * Stops etcd if it still runs (even if frozen), starts it again on the same data dir, waits until
   * healthy. `empty`: on a new data dir instead, which makes it another, empty cluster (a new cluster id).
   */
  async restartEtcd(opts: { empty?: boolean } = {}): Promise<void> {
    this.assertAlive();
    const [server, ...others] = this.etcdServers;
    if (!server) throw new Error('etcd was never started');
    if (others.length) throw new Error('restartEtcd() is for a single-member etcd: use killEtcdMember() and startEtcdMember()');
    await server.stop();
    this.currentEtcdClient?.close();
    this.currentEtcdClient = undefined;
    if (opts.empty) rmSync(join(this.tmpDir!, 'etcd-data'), { recursive: true, force: true });
    await server.start();
  }

  /**
   * Kills every process this data centre started (SIGTERM, SIGKILL after 6 s),
   * deletes its links and namespaces, removes its temporary directory.
   * Idempotent; never throws (problems are printed as warnings).
   */
  destroy(): Promise<void> {
    this.destruction ??= this.teardown();
    return this.destruction;
  }

  /** Last resort for process exit: same as destroy() but synchronous and without grace. */
  destroySync(): void {
    for (const p of this.processes) p.signal('SIGKILL');
    // radvd daemonized away from its agent: found by its pid file, before the directory goes.
    for (const dir of this.radvdDirs) {
      const pid = radvdPid(dir);
      if (pid !== undefined) process.kill(pid, 'SIGKILL');
    }
    // Also what is being created right now (its `ip` was just killed, but
    // may have got that far): every name carries our claimed id, so it is ours.
    for (const undo of [...this.creating, ...[...this.created].reverse()]) {
      spawnSync(this.programs.ip, undo.ipArgs, { stdio: 'ignore' });
    }
    if (this.tmpDir) rmSync(this.tmpDir, { recursive: true, force: true });
  }

  // ---- building -------------------------------------------------------

  private get fabricAddress(): string {
    return `fd00:${this.id}::1`;
  }

  /** etcd member 0 on the fabric bridge's address, the others on fd00:<id>::1:<n> (hosts have ::2, ::3 …). */
  private etcdAddress(member: number): string {
    return member === 0 ? this.fabricAddress : `fd00:${this.id}::1:${member + 1}`;
  }

  private etcdMember(member: number): EtcdServer {
    const server = this.etcdServers[member];
    if (!server) throw new Error(`no etcd member ${member} in data centre ${this.id} (members: ${this.etcdServers.length})`);
    return server;
  }

  /**
   * Claims `id` by creating the fabric namespace (atomic: `ip netns add`
   * fails if the name exists), after checking that no leftover of an
   * earlier run uses the id. False when the id is taken.
   */
  private async claimId(): Promise<boolean> {
    const namespaces = await this.run([this.programs.ip, 'netns', 'list']);
    const leftover = new RegExp(`^vx.-${this.id}(-|\\s|$)`, 'm');
    if (leftover.test(namespaces.stdout)) return false;
    if ((await this.run([this.programs.ip, 'link', 'show', 'dev', this.rootLink])).code === 0) return false;
    const routes = await this.run([this.programs.ip, '-6', 'route', 'show', 'root', `fd00:${this.id}::/64`]);
    if (routes.code !== 0 || routes.stdout.trim() !== '') return false;
    try {
      await this.addNamespace(this.fabricNs);
      return true;
    } catch (err) {
      if (err instanceof NameInUseError) return false;
      throw err;
    }
  }

  private async build(hostNames: string[], underlayMtu: number): Promise<void> {
    const fabric = this.fabricNs;
    // Snooping off: the bridge must flood VXLAN multicast to every host
    // without depending on MLD reports it may have missed or aged out.
    await this.ip('-n', fabric, 'link', 'add', 'name', FABRIC_BRIDGE, 'type', 'bridge', 'mcast_snooping', '0');
    await this.ip('-n', fabric, 'addr', 'add', `${this.fabricAddress}/64`, 'dev', FABRIC_BRIDGE, 'nodad');
    await this.ip('-n', fabric, 'link', 'set', FABRIC_BRIDGE, 'up');

    // The test process's own port on the fabric, to reach etcd and the agents' HTTP servers.
    // Deleted before the fabric namespace (newest first): a namespace frees
    // its devices asynchronously, so the root end of this veth could outlive
    // `ip netns del` for a moment.
    await this.recordCreation({ what: `link ${this.rootLink}`, ipArgs: ['link', 'del', 'dev', this.rootLink], missing: /Cannot find device/ }, () =>
      this.ip('link', 'add', 'name', this.rootLink, 'type', 'veth', 'peer', 'name', FABRIC_ROOT_PORT, 'netns', fabric),
    );
    await this.ip('-n', fabric, 'link', 'set', FABRIC_ROOT_PORT, 'master', FABRIC_BRIDGE, 'up');
    await this.ip('addr', 'add', `${this.testAddress}/64`, 'dev', this.rootLink, 'nodad');
    await this.ip('link', 'set', this.rootLink, 'up');

    this.tmpDir = mkdtempSync(join(tmpdir(), `vxnetd-native-${this.id}-`));
    await this.startEtcd();

    for (const [index, name] of hostNames.entries()) {
      await this.addHost(name, `fd00:${this.id}::${(index + 2).toString(16)}`, underlayMtu);
    }
  }

  /** One member (as before) or a cluster whose members talk to each other over the fabric bridge. */
  private async startEtcd(): Promise<void> {
    const members = this.etcdEndpoints.length;
    const memberName = (member: number) => `vxnetd-native-${this.id}${members > 1 ? `-${member}` : ''}`;
    const peerUrl = (member: number) => `http://[${this.etcdAddress(member)}]:${ETCD_PEER_PORT}`;
    const initialCluster = Array.from({ length: members }, (_, member) => `${memberName(member)}=${peerUrl(member)}`).join(',');
    for (let member = 0; member < members; member++) {
      if (member > 0) await this.ip('-n', this.fabricNs, 'addr', 'add', `${this.etcdAddress(member)}/64`, 'dev', FABRIC_BRIDGE, 'nodad');
      this.etcdServers.push(
        new EtcdServer({
          ipBinary: this.programs.ip,
          etcdBinary: this.programs.etcd,
          netns: this.fabricNs,
          memberName: memberName(member),
          dataDir: join(this.tmpDir!, members > 1 ? `etcd-data-${member}` : 'etcd-data'),
          logFile: join(this.tmpDir!, members > 1 ? `etcd-${member}.log` : 'etcd.log'),
          clientUrl: this.etcdEndpoints[member]!,
          ...(members > 1 ? { cluster: { peerUrl: peerUrl(member), initialCluster } } : {}),
          onSpawn: (p) => this.track(p),
        }),
      );
    }
    // Together: a member of a new cluster is healthy only once a quorum has elected a leader.
    await Promise.all(this.etcdServers.map((server) => server.start()));
  }

  private async addHost(name: string, underlayAddress: string, mtu: number): Promise<void> {
    const host: HostHandle = { name, ns: `vxh-${this.id}-${name}`, underlayAddress, fabricPort: `h-${name}` };
    await this.addNamespace(host.ns);
    // Both ends get the underlay MTU: a bridge drops frames larger than the egress port's MTU.
    const mtuArg = ['mtu', String(mtu)];
    await this.ip('-n', this.fabricNs, 'link', 'add', 'name', host.fabricPort, ...mtuArg, 'type', 'veth', 'peer', 'name', UNDERLAY_DEVICE, 'netns', host.ns, ...mtuArg);
    await this.ip('-n', this.fabricNs, 'link', 'set', host.fabricPort, 'master', FABRIC_BRIDGE, 'up');
    await this.ip('-n', host.ns, 'addr', 'add', `${underlayAddress}/64`, 'dev', UNDERLAY_DEVICE, 'nodad');
    await this.ip('-n', host.ns, 'link', 'set', UNDERLAY_DEVICE, 'up');
    this.hostsByName.set(name, host);
  }

  /** Creates a namespace with loopback up; fails with NameInUseError rather than reuse a foreign one. */
  private async addNamespace(ns: string): Promise<void> {
    this.assertAlive();
    const argv = [this.programs.ip, 'netns', 'add', ns];
    await this.recordCreation({ what: `namespace ${ns}`, ipArgs: ['netns', 'del', ns], missing: /No such file/ }, async () => {
      const result = await this.run(argv);
      if (result.code === 0) return;
      if (/File exists/.test(result.stderr)) throw new NameInUseError(`network namespace ${ns} already exists`);
      throw new Error(describeFailure(argv, result));
    });
    await this.ip('-n', ns, 'link', 'set', 'lo', 'up');
  }

  // ---- plumbing -------------------------------------------------------

  private async ip(...args: string[]): Promise<void> {
    const argv = [this.programs.ip, ...args];
    const result = await this.run(argv);
    if (result.code !== 0) throw new Error(describeFailure(argv, result));
  }

  private run(argv: string[], timeoutMs?: number): Promise<CommandResult> {
    return runCommand(argv, { timeoutMs, onSpawn: (p) => this.track(p) });
  }

  /** Runs `create`; once it succeeds, destroy() will run `undo`. A failed creation is not undone: the name may be someone else's. */
  private async recordCreation(undo: Undo, create: () => Promise<void>): Promise<void> {
    this.creating.add(undo);
    try {
      await create();
    } finally {
      this.creating.delete(undo);
    }
    // A test that timed out may still be building while afterAll destroys:
    // what it finishes creating after that must not survive.
    if (this.destruction) await this.undoCreation(undo);
    else this.created.push(undo);
  }

  private track(p: TrackedProcess): void {
    this.processes.add(p);
    void p.exited.then(() => this.processes.delete(p));
    // Started by a test body still running after destroy() began.
    if (this.destruction) void p.terminate('SIGTERM', 6_000);
  }

  private assertAlive(): void {
    if (this.destruction) throw new Error(`data centre ${this.id} has been destroyed`);
  }

  private async teardown(): Promise<void> {
    const problems: string[] = [];
    const attempt = async (what: string, step: () => unknown) => {
      try {
        await step();
      } catch (err) {
        problems.push(`${what}: ${(err as Error).message}`);
      }
    };

    for (const client of this.etcdClients) await attempt('close etcd client', () => client.close());
    // All at once: agents may each take the full grace period.
    await Promise.all([...this.processes].map((p) => attempt(`stop pid ${p.pid}`, () => p.terminate('SIGTERM', 6_000))));
    // radvd daemonizes away from the agent that started it (on purpose: it outlives the agent).
    for (const dir of this.radvdDirs) await attempt(`stop radvd of ${dir}`, () => stopRadvd(dir));

    for (const undo of [...this.created].reverse()) {
      await attempt(`delete ${undo.what}`, () => this.undoCreation(undo));
    }
    if (this.tmpDir) await attempt(`remove ${this.tmpDir}`, () => rmSync(this.tmpDir!, { recursive: true, force: true }));

    unregisterFromLastResortCleanup(this);
    if (problems.length > 0) {
      console.warn(`[native-tests harness] destroying data centre ${this.id}:\n  ${problems.join('\n  ')}`);
    }
  }

  private async undoCreation(undo: Undo): Promise<void> {
    const argv = [this.programs.ip, ...undo.ipArgs];
    const result = await runCommand(argv);
    if (result.code !== 0 && !undo.missing.test(result.stderr)) throw new Error(describeFailure(argv, result));
  }
}

function validateNames(kind: string, names: string[]): void {
  for (const name of names) {
    if (!SHORT_NAME.test(name)) {
      throw new Error(`${kind} name ${JSON.stringify(name)}: use 1-12 lowercase letters, digits or '-' (it becomes part of interface names)`);
    }
  }
  if (new Set(names).size !== names.length) throw new Error(`duplicate ${kind} names: ${names.join(', ')}`);
}

/** The value of `--flag value` or `--flag=value` in argv (the last one wins), or undefined. */
function flagValue(argv: string[], flag: string): string | undefined {
  let value: string | undefined;
  argv.forEach((arg, i) => {
    if (arg === flag) value = argv[i + 1];
    else if (arg.startsWith(`${flag}=`)) value = arg.slice(flag.length + 1);
  });
  return value;
}

/** `[addr]:port` as the agent listens → URL the test process can reach; a wildcard means the underlay address. */
function metricsUrlFor(listen: string, underlayAddress: string): string {
  const bracketed = /^\[(.*)\]:(\d+)$/.exec(listen);
  if (bracketed) {
    const address = bracketed[1] === '' || bracketed[1] === '::' ? underlayAddress : bracketed[1];
    return `http://[${address}]:${bracketed[2]}`;
  }
  return `http://${listen}`;
}
