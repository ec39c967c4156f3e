/**
 * The first kind of kernel object: one network's VXLAN device and bridge (DESIGN.md §2).
 * Reads the desired state and the kernel facts, plans (plan/, pure), applies (apply.ts) and
 * reports the network's status; the loop decides when, how often and what to retry.
 */
import { KernelError } from '../kernel/errors.js';
import type { Kernel } from '../kernel/rtnl.js';
import { NoIpv6OnDevice, type Ipv6DeviceSettings } from '../kernel/sysctl.js';
import type { DesiredNetwork } from '../model/network.js';
import { hexFromOwnerAlias } from '../model/identity.js';
import { bridgeName, parseVniHex, vxlanName } from '../model/vni.js';
import { emptyActual, hexFromDeviceName } from '../plan/actual.js';
import { deviceMatches, ownershipOf, planNetwork, type ActualNetwork, type Ownership } from '../plan/plan.js';
import type { ObjectKind, Outcome } from '../reconcile/loop.js';
import { applyPlan } from './apply.js';
import type { BulkApplyGuard } from './bulk-apply.js';
import type { DesiredState } from './desired-state.js';
import type { KernelFacts, LinkNotice } from './kernel-facts.js';
import type { NetworkStatuses } from './network-statuses.js';

export interface DevicePairLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

export const DEVICE_PAIRS = 'network';

export class DevicePairs implements ObjectKind<ActualNetwork> {
  readonly name = DEVICE_PAIRS;
  /** Pure functions of host and VNI; sha256 is a full round's main JavaScript cost at thousands of networks. */
  private readonly ownerships = new Map<string, Ownership>();
  private ownershipsFor?: string;
  /** Names to visit in the next full round although nothing else mentions them (networks gone while we were away). */
  private readonly alsoVisit = new Set<string>();
  /** Per network, the devices with its VNI that are not this agent's to touch (reported, never changed). */
  private readonly leftAlone = new Map<string, string[]>();

  constructor(
    private readonly kernel: Kernel,
    private readonly desired: DesiredState,
    private readonly facts: KernelFacts,
    private readonly statuses: NetworkStatuses,
    private readonly bulk: BulkApplyGuard,
    private readonly log: DevicePairLog,
    private readonly settings: { hostname: string; underlay: string; takeOver?: string },
    private readonly hooks: {
      /** The network is wanted on this host (whatever its devices come to), or gone from it. */
      membership?(hex: string, member: boolean): void;
      /** Its devices are in place; `changed`: this reconcile changed them. The kinds built on them may go ahead. */
      devicesReady?(hex: string, changed: boolean): void;
    } = {},
    private readonly ipv6Settings?: Ipv6DeviceSettings,
  ) {}

  /** Bridges (by ifindex) whose router advertisements are known to be ignored. */
  private readonly quietBridges = new Set<number>();
  private ipv6SettingsProblem?: string;

  /**
   * A bridge with IPv6 takes an address and a default route from any router advertisement on its
   * segment, addrgenmode none or not: a tenant VM running radvd would give the host an address
   * in its network. Once per bridge and process: the setting goes with the device.
   */
  private quietBridge(hex: string, index: number | undefined): void {
    if (!this.ipv6Settings || index === undefined || this.quietBridges.has(index) || this.ipv6SettingsProblem !== undefined) return;
    try {
      this.ipv6Settings.ignoreRouterAdvertisements(bridgeName(hex));
      this.quietBridges.add(index);
    } catch (error) {
      // No IPv6 on this bridge at all (MTU below 1280, IPv6 off): nothing to ignore.
      if (error instanceof NoIpv6OnDevice) return void this.quietBridges.add(index);
      this.ipv6SettingsProblem = (error as Error).message;
      this.log.error(
        { op: 'ipv6', err: this.ipv6SettingsProblem },
        `cannot make bridges ignore router advertisements (${this.ipv6SettingsProblem}): set net.ipv6.conf.default.accept_ra=0 and net.ipv6.conf.default.autoconf=0 (sysctl.d) so that new bridges never take an address from a tenant's router advertisement`,
      );
    }
  }

  /** Devices left alone because they are of another identity or of an earlier vxnetd and not wanted here. */
  leftAloneCount(): number {
    let count = 0;
    for (const devices of this.leftAlone.values()) count += devices.length;
    return count;
  }

  visitInNextFullRound(names: Iterable<string>): void {
    for (const name of names) this.alsoVisit.add(name);
  }

  async observeAll(): Promise<Map<string, ActualNetwork | undefined>> {
    const byNetwork = this.facts.fromDump(await this.kernel.dumpLinks());
    const names = new Set<string>([...this.desired.names(), ...this.statuses.names(), ...this.alsoVisit]);
    this.alsoVisit.clear();
    // A network is visited for its devices only if one carries our alias: a foreign device that
    // merely has a name like ours is nobody's business until a network wants that name.
    for (const [hex, actual] of byNetwork) {
      if ([actual.bridge, actual.vxlan, ...actual.strays].some((link) => link && hexFromOwnerAlias(link.alias) === hex)) names.add(hex);
    }
    const visits = new Map<string, ActualNetwork | undefined>();
    for (const hex of names) if (parseVniHex(hex) !== undefined) visits.set(hex, byNetwork.get(hex) ?? emptyActual());
    return visits;
  }

  async reconcile(hex: string, given: ActualNetwork | undefined): Promise<Outcome> {
    const underlay = this.facts.underlay;
    const specRevision = this.desired.specRevision(hex);
    if (!underlay) {
      if (specRevision === undefined) return { result: 'done', changed: false };
      const reason = `underlay ${this.settings.underlay} not found on this host`;
      this.statuses.error(hex, reason, specRevision);
      return { result: 'blocked', reason };
    }
    const wanted = this.desired.wanted(hex, underlay);
    // Carried here as soon as it is wanted, whatever its devices come to: other hosts flood to it meanwhile.
    if (wanted.wanted) this.hooks.membership?.(hex, true);
    if (!wanted.wanted && wanted.attachedToMissing) {
      this.statuses.error(hex, `attached to this host, but network ${hex} does not exist under /networks/`);
    }
    if (wanted.wanted && 'error' in wanted) {
      // Existing devices are kept: VMs on them keep working until the spec is fixed.
      this.statuses.error(hex, wanted.error.message, wanted.specRevision);
      return { result: 'blocked', reason: wanted.error.message };
    }
    // Missing data is not an empty desired state: nothing is deleted before a full list.
    if (!wanted.wanted && !this.desired.known) return { result: 'done', changed: false };
    const network = wanted.wanted ? wanted.network : undefined;

    // Only a wanted network is assumed absent: the plan is then exclusive creates, never a deletion.
    const assumedAbsent = !given && network !== undefined && !this.facts.mayHaveDevices(hex);
    const actual = given ?? (assumedAbsent ? emptyActual() : await this.readActual(hex));
    const plan = planNetwork(hex, network, actual, this.ownership(hex));
    this.reportLeftAlone(hex, plan.leftAlone);
    const holder = network && this.vniHeldElsewhere(network);
    if (holder) plan.conflicts.push(`device ${holder.name} already uses VNI ${network.vni} (${hex}) on port ${network.vxlan.port}, so the kernel refuses ${network.vxlan.name}; remove that device or use another VNI`);
    if (plan.conflicts.length) {
      const reason = plan.conflicts.join('; ');
      if (this.statuses.get(hex)?.reason !== reason) this.log.warn({ vni: hex, op: 'conflict' }, reason);
      this.statuses.error(hex, reason, wanted.wanted ? wanted.specRevision : undefined);
      return { result: 'failed', reason };
    }
    if (plan.ops.length === 0) {
      if (network) this.quietBridge(hex, actual.bridge?.index ?? this.facts.bridgeIndex(hex));
      return this.finish(hex, wanted.wanted ? wanted : undefined, false, !wanted.wanted && wanted.attachedToMissing);
    }

    if (network) this.facts.expectDevices(hex);
    this.bulk.applyStarted();
    try {
      const created = await applyPlan(this.kernel, plan.ops, this.log);
      const bridgeIndex = created.get(bridgeName(hex));
      if (bridgeIndex !== undefined) this.facts.noteCreatedBridge(hex, bridgeIndex);
      if (network) this.quietBridge(hex, bridgeIndex ?? this.facts.bridgeIndex(hex));
    } catch (error) {
      if (!(error instanceof KernelError)) throw error;
      if (assumedAbsent && error.errno === 'EEXIST') {
        this.log.info({ vni: hex, op: 'plan' }, `network ${hex}: a device the agent had not seen is in the way; planning again from the kernel's state`);
        return { result: 'stale' };
      }
      // The kernel removes a vxlan before announcing that its underlay went away.
      if (error.errno === 'ENODEV' && !(await this.kernel.getLink(this.settings.underlay))) {
        this.facts.underlayLost();
        const reason = `underlay ${this.settings.underlay} not found on this host`;
        this.statuses.error(hex, reason, specRevision);
        return { result: 'blocked', reason };
      }
      this.statuses.error(hex, error.message, specRevision);
      return { result: 'failed', reason: error.message };
    } finally {
      this.bulk.applyEnded();
    }
    return this.finish(hex, wanted.wanted ? wanted : undefined, true, !wanted.wanted && wanted.attachedToMissing);
  }

  /**
   * True when a notification shows a device as the last reconcile left it, so that it needs no
   * reconcile: the same rules as the plan, applied to the one device.
   */
  explains(hex: string, { type, link }: LinkNotice): boolean {
    // A device of a network this host does not want is gone: that is what the reconcile did.
    if (type === 'del') return !this.desired.isWanted(hex) && this.statuses.get(hex) === undefined;
    if (hexFromDeviceName(link.name)?.hex !== hex) return false;
    const underlay = this.facts.underlay;
    if (!underlay || !this.statuses.devicesReady(hex)) return false;
    const wanted = this.desired.wanted(hex, underlay);
    if (!wanted.wanted || !('network' in wanted)) return false;
    return deviceMatches(wanted.network, link, this.ownership(hex), this.facts.bridgeIndex(hex));
  }

  /** A vxlan under another name, not ours, with this network's VNI and port: the create could only fail (EEXIST). */
  private vniHeldElsewhere(network: DesiredNetwork): { name: string } | undefined {
    const holder = this.facts.vniHolder(network.vni);
    if (!holder || holder.name === network.vxlan.name || holder.port !== network.vxlan.port) return undefined;
    return holder.alias === network.vxlan.alias ? undefined : holder;
  }

  private finish(hex: string, wanted: { specRevision: number; network: DesiredNetwork } | undefined, changed: boolean, attachedToMissing: boolean): Outcome {
    if (wanted) {
      this.statuses.ready(hex, wanted.specRevision, wanted.network.vxlan.mtu);
      this.hooks.devicesReady?.(hex, changed);
      return { result: 'done', changed };
    }
    this.hooks.membership?.(hex, false);
    if (attachedToMissing) return { result: 'done', changed };
    this.facts.forgetNetwork(hex);
    this.ownerships.delete(hex);
    this.statuses.clear(hex);
    return { result: 'done', changed, forget: true };
  }

  private async readActual(hex: string): Promise<ActualNetwork> {
    const [vxlan, bridge] = await Promise.all([this.kernel.getLink(vxlanName(hex)), this.kernel.getLink(bridgeName(hex))]);
    if (bridge) this.facts.noteBridge(hex, bridge);
    return { strays: [], ...(vxlan ? { vxlan } : {}), ...(bridge ? { bridge } : {}) };
  }

  /** Logged when a network's list of such devices changes, so at start and on every change, not at every round. */
  private reportLeftAlone(hex: string, devices: string[]): void {
    const before = this.leftAlone.get(hex) ?? [];
    if (devices.length === 0) this.leftAlone.delete(hex);
    else this.leftAlone.set(hex, devices);
    for (const device of devices) if (!before.includes(device)) this.log.warn({ vni: hex, op: 'identity' }, device);
  }

  private ownership(hex: string): Ownership {
    const identity = this.desired.identity ?? '';
    if (this.ownershipsFor !== identity) {
      this.ownerships.clear();
      this.ownershipsFor = identity;
    }
    let known = this.ownerships.get(hex);
    if (!known) {
      known = ownershipOf(this.settings.hostname, parseVniHex(hex)!, identity, this.settings.takeOver);
      this.ownerships.set(hex, known);
    }
    return known;
  }
}
