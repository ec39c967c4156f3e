/**
 * The loop that ties desired state (etcd) → plan → kernel, one network at a
 * time per network, with repair on link events and a periodic full resync.
 */
import type { Link } from '../model/link.js';
import { KernelError } from '../kernel/errors.js';
import type { Kernel, LinkEvent } from '../kernel/rtnl.js';
import { desiredNetwork, type DesiredNetwork, type HostSettings, type Underlay } from '../model/network.js';
import { parseNetworkSpec, SpecError, type SpecResult } from '../model/spec.js';
import { bridgeName, hexFromOwnerAlias, ownerAlias, parseVniHex, vxlanName } from '../model/vni.js';
import { emptyActual, groupLinksByNetwork, hexFromDeviceName, underlayOf } from '../plan/actual.js';
import { deviceMatches, ownershipOf, planNetwork, type ActualNetwork, type Ownership } from '../plan/plan.js';
import { systemClock, type Clock } from '../store/backoff.js';
import type { Change, Snapshot, StoredValue } from '../store/source.js';
import { applyPlan } from './apply.js';
import { KeyedWorkQueue } from './queue.js';

/**
 * Networks applied at once. With the requests on a thread of their own, enough must wait there
 * for the kernel to stay busy while this thread is in a GC pause or an etcd write: converge
 * 1,000 from empty, 32 against 16, interleaved: median 1.38× against 1.55× `ip -batch`
 * (bench/RESULTS.md, "2026-11-30, late").
 */
export const NETWORKS_IN_FLIGHT = 32;

export interface Logger {
  debug(fields: Record<string, unknown>, msg: string): void;
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

export interface NetworkStatus {
  state: 'ready' | 'error';
  reason?: string;
  vxlan: string;
  bridge: string;
  mtu?: number;
  specRevision?: number;
  updatedAt: string;
}

export interface AgentHooks {
  /** null: the network is gone from this host, remove its status. */
  status(hex: string, status: NetworkStatus | null): void;
  observeReconcile?(seconds: number): void;
  countSpecError?(reason: string): void;
  /** A bulk apply began (true) or ended (false): many statuses change at once meanwhile. */
  bulkApply?(active: boolean): void;
}

export interface AgentOptions {
  underlay: string;
  scope: 'all' | 'attached';
  host: HostSettings;
  resyncIntervalMs: number;
  concurrency?: number;
  clock?: Clock;
}

/**
 * With this many applies (plans with kernel changes) running at once, the agent's own
 * changes could flood the link-event socket (16 notifications per network created):
 * events are paused until the queue drains, then one full resync follows. Concurrent
 * applies, not queued keys or applies per busy period: a resync queues every network but
 * changes few, and a steady stream of puts keeps the queue busy one network at a time.
 */
const BULK_APPLIES = 8;

interface NetworkEntry {
  modRevision: number;
  spec: SpecResult;
  /** desiredNetwork() for one underlay, kept because every resync asks again (sha256 MACs, group). */
  desired?: { underlay: Underlay; result: DesiredNetwork | SpecError };
}

/** What one reconcile of a network did to the kernel. */
type ReconcileOutcome = 'unchanged' | 'applied' | 'failed';

export class Agent {
  private readonly networks = new Map<string, NetworkEntry>();
  private readonly attachments = new Map<string, StoredValue>();
  private readonly statuses = new Map<string, NetworkStatus>();
  private readonly bridgeIndex = new Map<string, number>();
  /**
   * Networks that may have a device in the kernel: those of the last dump, of link events since
   * and of the agent's own applies (undefined before the first dump). A wanted network outside
   * it is created without first asking the kernel (two failing RTM_GETLINKs per network in a
   * burst of new networks); creates are exclusive, so a device the agent did not know of fails
   * the create with EEXIST and the network is planned again from the kernel's state.
   */
  private devicesSeen?: Set<string>;
  /** Pure functions of host and VNI; sha256 is the resync's main JS cost at thousands of networks. */
  private readonly ownerships = new Map<string, Ownership>();
  /** Link events that arrive while their network is being reconciled, newest per device. */
  private readonly eventsDuringReconcile = new Map<string, Map<string, LinkEvent>>();
  private readonly countedErrors = new Set<string>();
  private readonly queue: KeyedWorkQueue<ActualNetwork>;
  private readonly clock: Clock;
  private underlay?: Underlay;
  /** Deletions need an authoritative list: missing data is not an empty desired state. */
  private desiredKnown = false;
  private resyncRunning?: Promise<void>;
  private resyncAgain = false;
  private resyncTimer?: NodeJS.Timeout;
  private bulkApply = false;
  private appliesRunning = 0;
  private firstReconcile = false;
  private readonly onLink = (event: LinkEvent) => this.handleLinkEvent(event);
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
    this.clock = options.clock ?? systemClock;
    this.queue = new KeyedWorkQueue(
      options.concurrency ?? NETWORKS_IN_FLIGHT,
      (hex, actual) => this.reconcileNetwork(hex, actual),
      () => this.endBulkApply(),
    );
  }

  start(): void {
    this.kernel.events.on('link', this.onLink);
    this.kernel.events.on('overflow', this.onOverflow);
    this.resyncTimer = setInterval(() => this.requestResync('periodic'), this.options.resyncIntervalMs);
  }

  stop(): void {
    this.kernel.events.off('link', this.onLink);
    this.kernel.events.off('overflow', this.onOverflow);
    clearInterval(this.resyncTimer);
  }

  get ready(): boolean {
    return this.firstReconcile;
  }

  counts(): { desired: number; ready: number; error: number } {
    let ready = 0;
    let error = 0;
    for (const status of this.statuses.values()) status.state === 'ready' ? ready++ : error++;
    let desired = 0;
    for (const hex of this.networks.keys()) if (this.isWanted(hex)) desired++;
    return { desired, ready, error };
  }

  statusOf(hex: string): NetworkStatus | undefined {
    return this.statuses.get(hex);
  }

  // ---- desired state ----

  /** A fresh list from etcd: replace what we had, then converge everything. */
  async applySnapshot(snapshot: Snapshot): Promise<void> {
    const before = new Set([...this.networks.keys(), ...this.attachments.keys()]);
    this.networks.clear();
    this.attachments.clear();
    for (const [name, stored] of snapshot.networks) this.setNetwork(name, stored);
    for (const [name, stored] of snapshot.attachments) this.attachments.set(name, stored);
    // Statuses for networks that vanished while we were away are removed by the resync.
    for (const name of snapshot.statuses.keys()) before.add(name);
    this.desiredKnown = true;
    await this.fullResync('etcd list', before);
    if (!this.firstReconcile) {
      this.firstReconcile = true;
      this.log.info({ networks: this.counts() }, 'first reconcile finished');
    }
  }

  applyChange(change: Change): void {
    if (change.collection === 'attachments') {
      if (change.value) this.attachments.set(change.name, change.value);
      else this.attachments.delete(change.name);
      if (parseVniHex(change.name) !== undefined) this.queue.scheduleUrgent(change.name);
      return;
    }
    if (change.value) this.setNetwork(change.name, change.value);
    else this.networks.delete(change.name);
    if (parseVniHex(change.name) !== undefined) this.queue.scheduleUrgent(change.name);
  }

  private setNetwork(name: string, stored: StoredValue): void {
    if (parseVniHex(name) === undefined) {
      this.countSpecErrorOnce(`${name}@${stored.modRevision}`, 'invalid_key', () =>
        this.log.warn(
          { key: name, op: 'validate' },
          `ignoring network key ${JSON.stringify(name)}: not a canonical VNI (lowercase hex 1…ffffff without leading zeros, no slashes)`,
        ),
      );
      return;
    }
    this.networks.set(name, { modRevision: stored.modRevision, spec: parseNetworkSpec(stored.value) });
  }

  private isWanted(hex: string): boolean {
    return this.networks.has(hex) && (this.options.scope === 'all' || this.attachments.has(hex));
  }

  // ---- reconcile ----

  requestResync(reason: string): void {
    if (this.resyncRunning) {
      this.resyncAgain = true;
      return;
    }
    void this.fullResync(reason).catch(() => undefined);
  }

  /** One dump, every network planned from it. */
  private async fullResync(reason: string, alsoCheck: Iterable<string> = []): Promise<void> {
    while (this.resyncRunning) await this.resyncRunning;
    const run = this.resyncOnce(reason, alsoCheck);
    this.resyncRunning = run.finally(() => {
      this.resyncRunning = undefined;
      if (this.resyncAgain) {
        this.resyncAgain = false;
        this.requestResync('requested during resync');
      }
    });
    return this.resyncRunning;
  }

  private async resyncOnce(reason: string, alsoCheck: Iterable<string>): Promise<void> {
    const started = this.clock.now();
    let links: Link[];
    try {
      links = await this.kernel.dumpLinks();
    } catch (error) {
      this.log.error({ err: (error as Error).message, op: 'dump' }, 'cannot read kernel links; will retry at the next resync');
      throw error;
    }
    this.updateUnderlay(links.find((link) => link.name === this.options.underlay));
    const byNetwork = groupLinksByNetwork(links);
    this.devicesSeen = new Set(byNetwork.keys());
    for (const [hex, actual] of byNetwork) {
      if (actual.bridge && actual.bridge.alias === ownerAlias(hex)) this.bridgeIndex.set(hex, actual.bridge.index);
    }
    const hexes = new Set<string>([...this.networks.keys(), ...this.attachments.keys(), ...this.statuses.keys(), ...alsoCheck]);
    for (const [hex, actual] of byNetwork) {
      if ([actual.bridge, actual.vxlan, ...actual.strays].some((link) => link && hexFromOwnerAlias(link.alias) === hex)) hexes.add(hex);
    }
    for (const hex of hexes) {
      if (parseVniHex(hex) !== undefined) this.queue.schedule(hex, byNetwork.get(hex) ?? emptyActual());
    }
    await this.queue.idle();
    this.log.debug({ reason, networks: hexes.size, ms: this.clock.now() - started }, 'full resync finished');
  }

  private updateUnderlay(link: Link | undefined): void {
    const next = link ? underlayOf(link) : undefined;
    const prev = this.underlay;
    if (prev?.index === next?.index && prev?.mtu === next?.mtu && prev?.ipv6 === next?.ipv6) return;
    this.underlay = next;
    if (!next) {
      this.log.error({ device: this.options.underlay, op: 'underlay' }, `underlay ${this.options.underlay} not found; waiting for it (existing devices are kept)`);
    } else {
      this.log.info({ device: next.name, index: next.index, mtu: next.mtu, op: 'underlay' }, `underlay ${next.name} is ifindex ${next.index}, mtu ${next.mtu}`);
    }
  }

  private async reconcileNetwork(hex: string, given: ActualNetwork | undefined): Promise<void> {
    const started = process.hrtime.bigint();
    const seen = new Map<string, LinkEvent>();
    this.eventsDuringReconcile.set(hex, seen);
    let outcome: ReconcileOutcome = 'failed';
    try {
      outcome = await this.reconcileNetworkOnce(hex, given);
      // Our own changes' notifications are already queued on the event socket when the last
      // reply arrives; one turn of the event loop lets them in, so they are judged here
      // against the state just applied instead of each costing another reconcile.
      if (outcome === 'applied') await new Promise<void>((resolve) => setImmediate(resolve));
    } catch (error) {
      this.log.error({ vni: hex, err: (error as Error).stack }, 'unexpected reconcile failure');
    } finally {
      this.eventsDuringReconcile.delete(hex);
      // After a failed apply the events are our own undo; retrying on them would spin on a
      // persistent failure. The periodic resync, or the next change, retries it.
      if (outcome !== 'failed' && [...seen.values()].some((event) => !this.explainedByDesiredState(hex, event))) this.queue.schedule(hex);
      this.hooks.observeReconcile?.(Number(process.hrtime.bigint() - started) / 1e9);
    }
  }

  private async reconcileNetworkOnce(hex: string, given: ActualNetwork | undefined, assumeAbsent = true): Promise<ReconcileOutcome> {
    const entry = this.isWanted(hex) ? this.networks.get(hex) : undefined;
    const attachedToMissing = this.options.scope === 'attached' && this.attachments.has(hex) && !this.networks.has(hex);
    const vni = parseVniHex(hex)!;

    if (attachedToMissing) {
      this.setStatus(hex, 'error', `attached to this host, but network ${hex} does not exist under /networks/`);
    }
    if (!this.underlay) {
      if (entry) this.setStatus(hex, 'error', `underlay ${this.options.underlay} not found on this host`, entry.modRevision);
      return 'unchanged';
    }

    let desired: DesiredNetwork | undefined;
    if (entry) {
      try {
        desired = this.desiredFor(vni, entry, this.underlay);
      } catch (error) {
        if (!(error instanceof SpecError)) throw error;
        // Existing devices are kept: VMs on them keep working until the spec is fixed.
        this.countSpecErrorOnce(`${hex}@${entry.modRevision}`, error.code, () =>
          this.log.warn({ vni: hex, key: hex, reason: error.code, op: 'validate' }, `network ${hex}: ${error.message}`),
        );
        this.setStatus(hex, 'error', error.message, entry.modRevision);
        return 'unchanged';
      }
    } else if (!this.desiredKnown) {
      return 'unchanged';
    }

    // Only a wanted network is assumed absent: the plan is then exclusive creates, never a deletion.
    const assumedAbsent = !given && assumeAbsent && desired !== undefined && this.devicesSeen !== undefined && !this.devicesSeen.has(hex);
    const actual = given ?? (assumedAbsent ? emptyActual() : await this.readActual(hex));
    const plan = planNetwork(hex, desired, actual, this.ownership(hex, vni));
    if (plan.conflicts.length) {
      const reason = plan.conflicts.join('; ');
      if (this.statuses.get(hex)?.reason !== reason) this.log.warn({ vni: hex, op: 'conflict' }, reason);
      this.setStatus(hex, 'error', reason, entry?.modRevision);
      return 'unchanged';
    }
    if (plan.ops.length === 0) {
      this.finishReconcile(hex, desired, entry, attachedToMissing);
      return 'unchanged';
    }
    if (++this.appliesRunning >= BULK_APPLIES) this.beginBulkApply();
    if (desired) this.devicesSeen?.add(hex);
    try {
      const created = await applyPlan(this.kernel, plan.ops, this.log).finally(() => this.appliesRunning--);
      const bridgeIndex = created.get(bridgeName(hex));
      if (bridgeIndex !== undefined) this.bridgeIndex.set(hex, bridgeIndex);
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      if (assumedAbsent && error.errno === 'EEXIST') {
        this.log.info({ vni: hex, op: 'plan' }, `network ${hex}: a device the agent had not seen is in the way; planning again from the kernel's state`);
        return this.reconcileNetworkOnce(hex, undefined, false);
      }
      // The kernel removes a vxlan before announcing that its underlay went away.
      if (error.errno === 'ENODEV' && !(await this.kernel.getLink(this.options.underlay))) {
        this.updateUnderlay(undefined);
        this.setStatus(hex, 'error', `underlay ${this.options.underlay} not found on this host`, entry?.modRevision);
        return 'failed';
      }
      this.setStatus(hex, 'error', error.message, entry?.modRevision);
      return 'failed';
    }
    this.finishReconcile(hex, desired, entry, attachedToMissing);
    return 'applied';
  }

  private finishReconcile(hex: string, desired: DesiredNetwork | undefined, entry: NetworkEntry | undefined, attachedToMissing: boolean): void {
    if (desired) this.setStatus(hex, 'ready', undefined, entry!.modRevision, desired.vxlan.mtu);
    else if (!attachedToMissing) this.clearStatus(hex);
  }

  private async readActual(hex: string): Promise<ActualNetwork> {
    const [vxlan, bridge] = await Promise.all([this.kernel.getLink(vxlanName(hex)), this.kernel.getLink(bridgeName(hex))]);
    if (bridge && bridge.alias === ownerAlias(hex)) this.bridgeIndex.set(hex, bridge.index);
    return { strays: [], ...(vxlan ? { vxlan } : {}), ...(bridge ? { bridge } : {}) };
  }

  /** Throws the SpecError that makes the spec unusable on this underlay. */
  private desiredFor(vni: number, entry: NetworkEntry, underlay: Underlay): DesiredNetwork {
    if (!entry.spec.ok) throw entry.spec.error;
    if (entry.desired?.underlay !== underlay) {
      let result: DesiredNetwork | SpecError;
      try {
        result = desiredNetwork(vni, entry.spec.spec, this.options.host, underlay);
      } catch (error) {
        if (!(error instanceof SpecError)) throw error;
        result = error;
      }
      entry.desired = { underlay, result };
    }
    if (entry.desired.result instanceof SpecError) throw entry.desired.result;
    return entry.desired.result;
  }

  private ownership(hex: string, vni: number): Ownership {
    let known = this.ownerships.get(hex);
    if (!known) {
      known = ownershipOf(this.options.host.hostname, vni);
      this.ownerships.set(hex, known);
    }
    return known;
  }

  private setStatus(hex: string, state: NetworkStatus['state'], reason?: string, specRevision?: number, mtu?: number): void {
    const status: NetworkStatus = {
      state,
      ...(reason ? { reason } : {}),
      vxlan: vxlanName(hex),
      bridge: bridgeName(hex),
      ...(mtu !== undefined ? { mtu } : {}),
      ...(specRevision !== undefined ? { specRevision } : {}),
      updatedAt: new Date(this.clock.now()).toISOString(),
    };
    const previous = this.statuses.get(hex);
    this.statuses.set(hex, status);
    if (previous?.state !== state || previous?.reason !== reason) {
      const level = state === 'ready' ? 'info' : 'warn';
      this.log[level]({ vni: hex, state, reason, op: 'status' }, `network ${hex} is ${state}${reason ? `: ${reason}` : ''}`);
    }
    this.hooks.status(hex, status);
  }

  private clearStatus(hex: string): void {
    this.bridgeIndex.delete(hex);
    if (this.statuses.delete(hex)) this.log.info({ vni: hex, op: 'status' }, `network ${hex} removed from this host`);
    this.hooks.status(hex, null);
  }

  private countSpecErrorOnce(id: string, reason: string, report: () => void): void {
    if (this.countedErrors.has(id)) return;
    this.countedErrors.add(id);
    this.hooks.countSpecError?.(reason);
    report();
  }

  // ---- drift ----

  private beginBulkApply(): void {
    if (this.bulkApply) return;
    this.bulkApply = true;
    this.kernel.pauseEvents();
    this.hooks.bulkApply?.(true);
    this.log.info({ op: 'bulk', queued: this.queue.size, applies: this.appliesRunning }, 'bulk apply: link events paused until the queue drains');
  }

  private endBulkApply(): void {
    if (!this.bulkApply) return;
    this.bulkApply = false;
    this.kernel.resumeEvents();
    this.hooks.bulkApply?.(false);
    // Whatever changed by hand while events were paused is found by one dump.
    this.requestResync('link events resumed after bulk apply');
  }

  private handleLinkEvent({ type, link }: LinkEvent): void {
    if (link.name === this.options.underlay || (this.underlay && link.index === this.underlay.index)) {
      const next = type === 'new' && link.name === this.options.underlay ? link : undefined;
      const changed = next?.index !== this.underlay?.index || next?.mtu !== this.underlay?.mtu;
      if (changed) {
        this.updateUnderlay(next);
        this.requestResync('underlay changed');
      }
      return;
    }
    const named = hexFromDeviceName(link.name);
    const hex = named?.hex ?? hexFromOwnerAlias(link.alias);
    if (!hex) return;
    if (type === 'new') this.devicesSeen?.add(hex);
    if (type === 'new' && named?.role === 'bridge' && link.alias === ownerAlias(hex)) this.bridgeIndex.set(hex, link.index);
    const during = this.eventsDuringReconcile.get(hex);
    if (during) return void during.set(link.name, { type, link });
    if (!this.explainedByDesiredState(hex, { type, link })) this.queue.scheduleUrgent(hex);
  }

  /** True when the event shows a device as the last reconcile left it, so it needs no reconcile. */
  private explainedByDesiredState(hex: string, { type, link }: LinkEvent): boolean {
    // A device of a network this host does not want is gone: that is what the reconcile did.
    if (type === 'del') return !this.isWanted(hex) && !this.statuses.has(hex);
    const named = hexFromDeviceName(link.name);
    if (named?.hex !== hex) return false;
    const entry = this.networks.get(hex);
    if (!entry || !this.underlay || !this.isWanted(hex) || this.statuses.get(hex)?.state !== 'ready') return false;
    const vni = parseVniHex(hex)!;
    let desired: DesiredNetwork;
    try {
      desired = this.desiredFor(vni, entry, this.underlay);
    } catch {
      return false;
    }
    return deviceMatches(desired, link, this.ownership(hex, vni), this.bridgeIndex.get(hex));
  }
}
