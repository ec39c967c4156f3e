/**
 * The agent: desired state (etcd), kernel facts and network statuses, each a unit of its own,
 * and the reconcile loop that makes the kernel match, one registered kind of kernel object at a
 * time. To follow an etcd change to the kernel: applyChange() → DesiredState.apply() →
 * ReconcileLoop.schedule() → DevicePairs.reconcile() → planNetwork() → applyPlan() → Kernel.
 */
import type { AddressEvent, Kernel, LinkEvent, NeighbourEvent } from '../kernel/rtnl.js';
import type { Ipv6DeviceSettings } from '../kernel/sysctl.js';
import { bytesToBigint, parseAddress } from '../model/group.js';
import { identityText } from '../model/identity.js';
import type { HostSettings } from '../model/network.js';
import { isValidVni, vniHex, vxlanName } from '../model/vni.js';
import { ReconcileLoop, type LoopLog } from '../reconcile/loop.js';
import { systemTimers, type BackoffPolicy, type Timers } from '../reconcile/timers.js';
import type { Change, MemberChange, Snapshot, StoredValue } from '../store/source.js';
import { BRIDGE_ADDRESSES, BridgeAddresses, type Advertiser } from './bridge-addresses.js';
import { BulkApplyGuard } from './bulk-apply.js';
import type { RadvdOutcome } from './radvd.js';
import { DesiredState } from './desired-state.js';
import { DEVICE_PAIRS, DevicePairs } from './device-pairs.js';
import { FLOOD_ENTRIES, FloodEntries } from './flood-entries.js';
import { FloodMembers } from './flood-members.js';
import { KernelFacts } from './kernel-facts.js';
import { NetworkStatuses, type NetworkStatus, type StatusWriter } from './network-statuses.js';

export type { NetworkStatus } from './network-statuses.js';

/**
 * Networks applied at once. With the requests on a thread of their own, enough must wait there
 * for the kernel to stay busy while this thread is in a GC pause or an etcd write (bench/RESULTS.md,
 * "2026-11-30, late": 32 against 16, median 1.38× against 1.55× `ip -batch`).
 */
export const NETWORKS_IN_FLIGHT = 32;

/** pino's logger, as much of it as the agent uses. */
export type Logger = LoopLog;

export interface AgentHooks {
  status: StatusWriter;
  observeReconcile?(seconds: number): void;
  countSpecError?(reason: string): void;
  /** A bulk apply began (true) or ended (false): many statuses change at once meanwhile. */
  bulkApply?(active: boolean): void;
  /** The agent became ready: a full reconcile over a complete list from etcd succeeded. */
  ready?(): void;
  /** This host carries the network (it is wanted here) or no longer does: its key in the members index follows. */
  membership?(hex: string, member: boolean): void;
}

export interface AgentOptions {
  underlay: string;
  /** The etcd key prefix: part of the identity every device records. */
  prefix: string;
  /** An identity (as aliases spell it) whose devices this agent adopts: an operator's explicit take-over. */
  takeOver?: string;
  scope: 'all' | 'attached';
  host: HostSettings;
  resyncIntervalMs: number;
  concurrency?: number;
  timers?: Timers;
  retry?: BackoffPolicy;
  random?: () => number;
  /** Per-bridge IPv6 settings rtnetlink cannot make (ignore router advertisements); none in unit tests. */
  ipv6Settings?: Ipv6DeviceSettings;
  /** `--role router`: addresses on the bridges of routed networks, advertised by radvd through `advertiser`. */
  router?: { advertiser: Advertiser };
}

export class Agent {
  private readonly desired: DesiredState;
  private readonly facts: KernelFacts;
  private readonly statuses: NetworkStatuses;
  private readonly loop: ReconcileLoop;
  private readonly devicePairs: DevicePairs;
  private readonly members: FloodMembers;
  /** Unicast flooding only. */
  private readonly floodEntries?: FloodEntries;
  /** Routers only. */
  private readonly bridgeAddresses?: BridgeAddresses;
  private routerNumber?: number;
  /** Full rounds numbered this or higher began after a complete list: one that succeeds makes the agent ready. */
  private readyFromRound = Infinity;
  private isReady = false;
  private readonly onLink = (event: LinkEvent) => this.linkChanged(event);
  private readonly onNeighbour = (event: NeighbourEvent) => this.neighbourChanged(event);
  private readonly onAddress = (event: AddressEvent) => this.addressChanged(event);
  private readonly onOverflow = (error: Error) => {
    this.log.warn({ err: error?.message }, 'link events were lost; full resync');
    this.requestResync('lost link events');
  };

  constructor(
    private readonly kernel: Kernel,
    private readonly log: Logger,
    private readonly options: AgentOptions,
    private readonly hooks: AgentHooks,
  ) {
    const timers = options.timers ?? systemTimers;
    this.desired = new DesiredState(options.scope, options.host, log, hooks.countSpecError);
    this.facts = new KernelFacts(options.underlay, log);
    this.statuses = new NetworkStatuses(log, () => timers.now(), hooks.status);
    const bulk = new BulkApplyGuard(kernel, log, (active) => hooks.bulkApply?.(active), (reason) => this.requestResync(reason));
    this.loop = new ReconcileLoop(log, {
      concurrency: options.concurrency ?? NETWORKS_IN_FLIGHT,
      fullRoundIntervalMs: options.resyncIntervalMs,
      timers,
      ...(options.retry ? { retry: options.retry } : {}),
      ...(options.random ? { random: options.random } : {}),
      hooks: {
        observeAttempt: (_kind, seconds) => hooks.observeReconcile?.(seconds),
        fullRoundDone: (round, ok) => this.fullRoundDone(round, ok),
        idle: () => bulk.loopIdle(),
      },
    });
    this.members = new FloodMembers(options.host.hostname, log);
    this.devicePairs = new DevicePairs(
      kernel,
      this.desired,
      this.facts,
      this.statuses,
      bulk,
      log,
      {
        hostname: options.host.hostname,
        underlay: options.underlay,
        ...(options.takeOver !== undefined ? { takeOver: options.takeOver } : {}),
      },
      {
        membership: (hex, member) => this.hooks.membership?.(hex, member),
        devicesReady: (hex, changed) => this.devicesReady(hex, changed),
      },
      options.ipv6Settings,
    );
    this.loop.register(this.devicePairs);
    if (options.host.flood === 'unicast') {
      // Registered after the device pairs: a full round reads the links (the vxlans' ifindexes) first.
      this.floodEntries = new FloodEntries(kernel, this.desired, this.facts, this.members, this.statuses, bulk, log, options.host.groupBase.family);
      this.loop.register(this.floodEntries);
    }
    if (options.router) {
      this.bridgeAddresses = new BridgeAddresses(kernel, this.desired, this.facts, this.statuses, bulk, options.router.advertiser, log, {
        routerNumber: () => this.routerNumber,
        timers,
        withdrawn: (hex) => this.loop.schedule(BRIDGE_ADDRESSES, hex),
      });
      this.loop.register(this.bridgeAddresses);
    }
  }

  start(): void {
    this.kernel.events.on('link', this.onLink);
    this.kernel.events.on('neighbour', this.onNeighbour);
    this.kernel.events.on('address', this.onAddress);
    this.kernel.events.on('overflow', this.onOverflow);
    this.loop.start();
  }

  stop(): void {
    this.kernel.events.off('link', this.onLink);
    this.kernel.events.off('neighbour', this.onNeighbour);
    this.kernel.events.off('address', this.onAddress);
    this.kernel.events.off('overflow', this.onOverflow);
    this.loop.stop();
  }

  get ready(): boolean {
    return this.isReady;
  }

  counts(): { desired: number; ready: number; error: number; leftAlone: number } {
    return { desired: this.desired.wantedCount(), ...this.statuses.counts(), leftAlone: this.devicePairs.leftAloneCount() };
  }

  statusOf(hex: string): NetworkStatus | undefined {
    return this.statuses.get(hex);
  }

  /** The reconcile loop's own view of a network: its state, failures in a row and next retry. */
  reconcileStatusOf(hex: string) {
    return this.loop.statusOf(DEVICE_PAIRS, hex);
  }

  /** Unicast flooding: per network in place, the other hosts its vxlan floods to. */
  floodPeerCounts(): Array<{ hex: string; peers: number }> {
    const counts: Array<{ hex: string; peers: number }> = [];
    if (!this.floodEntries) return counts;
    for (const hex of this.statuses.names()) {
      const peers = this.statuses.floodPeers(hex);
      if (peers !== undefined) counts.push({ hex, peers });
    }
    return counts;
  }

  /** Resolves when nothing is queued or running (retries waiting out their delay do not count). */
  idle(): Promise<void> {
    return this.loop.idle();
  }

  /** A complete list from etcd: replaces the desired state, then one full round converges everything. */
  async applySnapshot(snapshot: Snapshot): Promise<void> {
    // Networks known before, and statuses left by an earlier agent, may have to go now.
    const identity = identityText({ host: this.options.host.hostname, etcdCluster: snapshot.etcdCluster, prefix: this.options.prefix });
    if (this.desired.identity !== undefined && this.desired.identity !== identity) {
      this.log.warn({ op: 'identity', identity, was: this.desired.identity }, `this agent's identity changed to ${identity}: devices made under the old one are left alone`);
    }
    this.devicePairs.visitInNextFullRound(this.desired.replace(snapshot, identity));
    this.members.replaceAll(snapshot.members);
    if (snapshot.routerNumber !== undefined) this.routerNumber = snapshot.routerNumber;
    this.readyFromRound = Math.min(this.readyFromRound, this.loop.nextRound);
    await this.loop.fullRound('etcd list', { retryFailedNow: true });
  }

  /** One watched change: its network is reconciled at once, a retry delay notwithstanding. */
  applyChange(change: Change): void {
    const network = this.desired.apply(change);
    if (network === undefined) return;
    if (change.collection === 'ipam') this.scheduleAddresses(network);
    else this.loop.schedule(DEVICE_PAIRS, network, { retryFailedNow: true });
  }

  /**
   * Routers: whether a client is in a tenant's network (any routed /64). With forwarding on, a VM
   * reaches every address of the router, the management one included: its connections are refused.
   */
  isTenantClient(remoteAddress: string): boolean {
    if (!this.bridgeAddresses) return false;
    const bytes = parseAddress(remoteAddress.replace(/%.*$/, ''), 'inet6');
    return bytes !== undefined && this.desired.inRoutedNetwork(bytesToBigint(bytes));
  }

  /** What radvd advertises now (RadvdSupervisor's report): each network's report in its status. */
  radvdReported(outcomes: RadvdOutcome[]): void {
    this.bridgeAddresses?.radvdReported(outcomes);
  }

  /** One watched change of the members index. */
  applyMemberChange(change: MemberChange): void {
    if (this.members.apply(change)) this.scheduleFlood(change.hex);
  }

  /** The members index of one network, from now on watched (a map) or no longer (undefined). */
  replaceMembers(hex: string, hosts: Map<string, StoredValue> | undefined): void {
    this.members.replace(hex, hosts);
    this.scheduleFlood(hex);
  }

  requestResync(reason: string): void {
    void this.loop.fullRound(reason);
  }

  private fullRoundDone(round: number, ok: boolean): void {
    if (!ok || this.isReady || round < this.readyFromRound) return;
    this.isReady = true;
    this.log.info({ networks: this.counts() }, 'first reconcile finished');
    this.hooks.ready?.();
  }

  /** Flood entries and bridge addresses need the devices: once those are in place, they go ahead. */
  private devicesReady(hex: string, changed: boolean): void {
    if (changed || this.loop.statusOf(FLOOD_ENTRIES, hex)?.state !== 'done') this.scheduleFlood(hex);
    if (changed || this.loop.statusOf(BRIDGE_ADDRESSES, hex)?.state !== 'done') this.scheduleAddresses(hex);
  }

  private scheduleAddresses(hex: string): void {
    if (this.bridgeAddresses?.concerns(hex) && this.desired.isWanted(hex)) this.loop.schedule(BRIDGE_ADDRESSES, hex, { retryFailedNow: true });
  }

  private addressChanged(event: AddressEvent): void {
    const hex = this.bridgeAddresses?.networkOf(event);
    if (hex !== undefined) this.loop.poke(BRIDGE_ADDRESSES, hex, event.address.address.toString('hex'), () => !this.bridgeAddresses!.explains(hex, event));
  }

  private scheduleFlood(hex: string): void {
    if (this.floodEntries && this.desired.isWanted(hex)) this.loop.schedule(FLOOD_ENTRIES, hex, { retryFailedNow: true });
  }

  private neighbourChanged(event: NeighbourEvent): void {
    const hex = this.floodEntries?.networkOf(event);
    // Judged per destination: the newest notification about each is what the kernel has now.
    const part = event.neighbour.destination?.toString('hex') ?? 'none';
    if (hex !== undefined) this.loop.poke(FLOOD_ENTRIES, hex, part, () => !this.floodEntries!.explains(hex, event));
  }

  private linkChanged(event: LinkEvent): void {
    const meaning = this.facts.fromNotice(event);
    if (meaning.underlayChanged) void this.loop.fullRound('underlay changed', { retryFailedNow: true });
    // A foreign device that held a network's VNI is gone: that network need not wait out its retry delay.
    const freed = meaning.vniFreed !== undefined && isValidVni(meaning.vniFreed) ? vniHex(meaning.vniFreed) : undefined;
    if (freed !== undefined && event.link.name !== vxlanName(freed) && this.desired.isWanted(freed)) {
      this.loop.schedule(DEVICE_PAIRS, freed, { retryFailedNow: true });
    }
    const network = meaning.network;
    if (network !== undefined) this.loop.poke(DEVICE_PAIRS, network, event.link.name, () => !this.devicePairs.explains(network, event));
  }
}
