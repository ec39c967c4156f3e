/**
 * The router's kind of kernel object (DESIGN.md §8): for each network with an IPAM entry, two
 * IPv6 addresses on its bridge — a link-local one (router advertisements are sent from it, and VMs
 * take their default route from it) and `<prefix>::<router number>/64` — then the network's
 * advertisement in radvd. Addresses carry no alias: vxnetd's are the ones with its IFA_PROTO
 * (VXNETD_ADDRESS_PROTOCOL). Those are added, repaired and removed; every other address on the
 * bridge is left alone, and one that holds an address vxnetd needs is reported, never taken.
 */
import { KernelError } from '../kernel/errors.js';
import type { AddressEvent, Kernel } from '../kernel/rtnl.js';
import { IFA_F_DADFAILED, IFA_F_TENTATIVE, VXNETD_ADDRESS_PROTOCOL, type Address } from '../model/address.js';
import { eui64InterfaceId } from '../model/eui64.js';
import { bigintToBytes, formatAddress } from '../model/group.js';
import { parseIpv6Prefix } from '../model/ipv6-prefix.js';
import { bridgeName } from '../model/vni.js';
import type { IpamReport } from '../model/ipam-availability.js';
import type { ObjectKind, Outcome } from '../reconcile/loop.js';
import type { Timer, Timers } from '../reconcile/timers.js';
import type { BulkApplyGuard } from './bulk-apply.js';
import type { DesiredState } from './desired-state.js';
import { DeviceTable } from './device-table.js';
import type { KernelFacts } from './kernel-facts.js';
import type { NetworkStatuses } from './network-statuses.js';
import type { Advertisement, RadvdOutcome } from './radvd.js';

export interface AddressLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

export const BRIDGE_ADDRESSES = 'address';

const AF_INET6 = 10;
const LINK_LOCAL_PREFIX = 0xfe80n << 112n;
/** RT_SCOPE_LINK for the link-local address, RT_SCOPE_UNIVERSE for the global one. */
const SCOPE_LINK = 253;
const SCOPE_UNIVERSE = 0;
/** Below this MTU the kernel keeps no IPv6 on a device: nothing can be advertised there. */
const IPV6_MIN_MTU = 1280;
/** How long a deleted IPAM entry's prefix is advertised with zero lifetimes before it is dropped (radvd sends a few RAs on reload). */
export const WITHDRAW_MS = 30_000;

/** Where radvd is told what to advertise (RadvdSupervisor in the agent). */
export interface Advertiser {
  set(hex: string, advertisement: Advertisement | undefined): void;
}

interface WantedAddress {
  bytes: Buffer;
  scope: number;
  what: string;
}

export class BridgeAddresses implements ObjectKind<Address[]> {
  readonly name = BRIDGE_ADDRESSES;
  /** What each network last advertised: withdrawn with zero lifetimes when its IPAM entry goes. */
  private readonly advertised = new Map<string, Advertisement>();
  private readonly withdrawing = new Map<string, Timer>();
  /** Why a network cannot be served here (a held or duplicate address …): radvd's reports do not override it. */
  private readonly problems = new Map<string, string>();
  /**
   * Networks whose addresses of ours are still tentative (duplicate address detection runs for a
   * second or so after an add): advertised, and reported served, only once it has passed — the
   * kernel's notification of that brings the network back here.
   */
  private readonly awaitingDad = new Set<string>();
  /** Each of our bridges' IPv6 addresses: a reconcile outside a full round needs no dump of every address of the host (a burst of new IPAM entries made one each). */
  private readonly known = new DeviceTable<Address>((address) => address.address.toString('hex'));
  /** Withdrawn: the link-local address kept for the withdrawal goes in the next reconcile. */
  private readonly leftovers = new Set<string>();

  constructor(
    private readonly kernel: Kernel,
    private readonly desired: DesiredState,
    private readonly facts: KernelFacts,
    private readonly statuses: NetworkStatuses,
    private readonly bulk: BulkApplyGuard,
    private readonly radvd: Advertiser,
    private readonly log: AddressLog,
    private readonly settings: {
      routerNumber: () => number | undefined;
      timers: Timers;
      /** A withdrawal ended: the network's link-local address may go now. */
      withdrawn: (hex: string) => void;
    },
  ) {}

  async observeAll(): Promise<Map<string, Address[] | undefined>> {
    const byIndex = new Map<number, Address[]>();
    for (const address of await this.kernel.dumpAddresses(AF_INET6)) {
      let list = byIndex.get(address.index);
      if (!list) byIndex.set(address.index, (list = []));
      list.push(address);
    }
    const visits = new Map<string, Address[] | undefined>();
    const bridges: number[] = [];
    const visit = (hex: string) => {
      const index = this.facts.bridgeIndex(hex);
      if (index !== undefined) bridges.push(index);
      visits.set(hex, index === undefined ? undefined : (byIndex.get(index) ?? []));
    };
    for (const hex of this.desired.names()) if (this.desired.isWanted(hex)) visit(hex);
    for (const hex of this.advertised.keys()) visit(hex);
    this.known.replaceAll(bridges, bridges.flatMap((index) => byIndex.get(index) ?? []));
    return visits;
  }

  async reconcile(hex: string, hint: Address[] | undefined): Promise<Outcome> {
    if (!this.desired.isWanted(hex)) {
      // The bridge goes with the device pair, and its addresses with it; radvd stops advertising there.
      this.forget(hex);
      return { result: 'done', changed: false, forget: true };
    }
    if (!this.statuses.devicesReady(hex)) return { result: 'blocked', reason: `waiting for the devices of network ${hex}` };
    const routed = this.desired.routed(hex);
    const specRevision = this.desired.specRevision(hex);
    const mtu = this.statuses.get(hex)?.mtu;
    const bridgeMac = this.bridgeMac(hex);
    const number = this.settings.routerNumber();

    let wanted: WantedAddress[] = [];
    let advertisement: Advertisement | undefined;
    let problem: string | undefined;
    if (routed && 'problem' in routed) problem = routed.problem;
    else if (routed && number === undefined) problem = 'this router has no router number yet';
    else if (routed && mtu !== undefined && mtu < IPV6_MIN_MTU) problem = `MTU ${mtu} is below ${IPV6_MIN_MTU}: the bridge has no IPv6, nothing can be advertised`;
    else if (routed && 'entry' in routed && bridgeMac && mtu !== undefined) {
      const subnet = parseIpv6Prefix(routed.entry.prefix);
      wanted = [linkLocal(bridgeMac), { bytes: bigintToBytes(subnet.address | BigInt(number!), 16), scope: SCOPE_UNIVERSE, what: 'router address' }];
      advertisement = { hex, bridge: bridgeName(hex), prefix: subnet.text, mtu, dns: routed.entry.dns, revision: routed.revision };
    }
    // Withdrawing: radvd sends the zero lifetimes from the link-local address, which stays until then.
    if (!routed && this.withdrawing.has(hex) && bridgeMac) wanted = [linkLocal(bridgeMac)];
    if (problem !== undefined) this.report(hex, routed!.revision, problem);

    // Outside a full round a layer-2 network needs no read: only the full round's dump could show stale addresses of ours on it.
    if (!hint && !this.concerns(hex)) return { result: 'done', changed: false };
    const index = this.facts.bridgeIndex(hex);
    if (index === undefined) return { result: 'blocked', reason: `${bridgeName(hex)} not found` };
    let onBridge: Address[];
    try {
      onBridge = hint ?? this.known.get(index) ?? (await this.dumpOne(index));
    } catch (error) {
      return this.failed(hex, routed?.revision, error);
    }

    const ours = onBridge.filter((address) => address.protocol === VXNETD_ADDRESS_PROTOCOL);
    const foreign = onBridge.filter((address) => address.protocol !== VXNETD_ADDRESS_PROTOCOL);
    const conflicts = wanted.filter((want) => foreign.some((address) => address.address.equals(want.bytes)));
    const duplicates = ours.filter((address) => address.flags & IFA_F_DADFAILED && wanted.some((want) => want.bytes.equals(address.address)));
    const extra = ours.filter((address) => !wanted.some((want) => want.bytes.equals(address.address) && address.prefixLength === 64) || duplicates.includes(address));
    // One that failed DAD is deleted now and added again (a fresh DAD) only at the retry, after the backoff.
    const missing = wanted.filter(
      (want) => !conflicts.includes(want) && !duplicates.some((address) => address.address.equals(want.bytes)) && !ours.some((address) => address.address.equals(want.bytes) && address.prefixLength === 64),
    );

    let changed = false;
    if (extra.length || missing.length) {
      changed = true;
      this.bulk.applyStarted();
      try {
        // What the kernel has after each change, whether or not its notifications arrive (they are paused in a bulk apply).
        if (!this.known.get(index)) this.known.set(index, onBridge);
        for (const address of extra) {
          const description = `delete address ${formatAddress(address.address)}/${address.prefixLength} from ${bridgeName(hex)}${duplicates.includes(address) ? ' (duplicate address detection failed)' : ''}`;
          await this.kernel.deleteAddress(address, description);
          this.known.apply('del', address);
          this.log.info({ vni: hex, device: bridgeName(hex), op: 'deleteAddress' }, description);
        }
        for (const want of missing) {
          const description = `add ${want.what} ${formatAddress(want.bytes)}/64 to ${bridgeName(hex)}`;
          const address: Address = { family: AF_INET6, index, prefixLength: 64, address: want.bytes, flags: 0, scope: want.scope, protocol: VXNETD_ADDRESS_PROTOCOL };
          await this.kernel.addAddress(address, description);
          // Tentative until duplicate address detection passes, as the kernel has it (unless its notification came first).
          this.known.apply('new', { ...address, flags: IFA_F_TENTATIVE }, true);
          this.log.info({ vni: hex, device: bridgeName(hex), op: 'addAddress' }, description);
        }
      } catch (error) {
        this.known.forget(index);
        // ENODEV: the bridge was replaced; EEXIST: someone added the address since the read. Plan again from a fresh read.
        if (error instanceof KernelError && (error.errno === 'ENODEV' || error.errno === 'EEXIST')) return { result: 'stale' };
        return this.failed(hex, routed?.revision, error);
      } finally {
        this.bulk.applyEnded();
      }
    }

    if (conflicts.length || duplicates.length) {
      const reason = [
        ...conflicts.map((want) => `${formatAddress(want.bytes)} is already on ${bridgeName(hex)}, not added by vxnetd: left alone`),
        ...duplicates.map((address) => `${formatAddress(address.address)} on ${bridgeName(hex)} failed duplicate address detection: another node of the network uses it (two routers with one number?)`),
      ].join('; ');
      this.report(hex, routed?.revision ?? specRevision ?? 0, reason);
      // Re-added (a fresh DAD) after the retry delay: the duplicate may be gone by then.
      return { result: 'failed', reason };
    }
    if (problem !== undefined) return { result: 'blocked', reason: problem };
    const tentative = ours.some((address) => address.flags & IFA_F_TENTATIVE && wanted.some((want) => want.bytes.equals(address.address)));
    if (advertisement && (missing.length > 0 || tentative)) {
      this.awaitingDad.add(hex);
      return { result: 'done', changed };
    }
    this.awaitingDad.delete(hex);
    this.problems.delete(hex);
    if (advertisement) {
      this.advertised.set(hex, advertisement);
      this.cancelWithdrawal(hex);
      this.radvd.set(hex, advertisement);
    } else if (!routed) {
      this.withdraw(hex);
      if (!this.withdrawing.has(hex)) this.leftovers.delete(hex);
    }
    return { result: 'done', changed };
  }

  /** Whether the network has, or is losing, addresses and an advertisement here (a pure layer-2 network has none). */
  concerns(hex: string): boolean {
    return this.desired.routed(hex) !== undefined || this.advertised.has(hex) || this.leftovers.has(hex);
  }

  /** True when a notification shows an address as the last reconcile left it. */
  explains(hex: string, { type, address }: AddressEvent): boolean {
    // A foreign address is none of ours, unless it holds one we need: that is a conflict to report.
    if (address.protocol !== VXNETD_ADDRESS_PROTOCOL) return !this.isWanted(hex, address.address);
    if (this.awaitingDad.has(hex)) return false;
    // Ours, deleted or failing DAD: only a reconcile can tell whether that was its own doing.
    return type === 'new' && !(address.flags & IFA_F_DADFAILED) && this.isWanted(hex, address.address);
  }

  /** The network an address notification is about: an address on one of our bridges (what the kind knows of that bridge follows it). */
  networkOf(event: AddressEvent): string | undefined {
    this.known.apply(event.type, event.address);
    const hex = this.facts.networkOfBridge(event.address.index);
    return hex !== undefined && this.desired.isWanted(hex) ? hex : undefined;
  }

  private async dumpOne(index: number): Promise<Address[]> {
    const addresses = (await this.kernel.dumpAddresses(AF_INET6)).filter((address) => address.index === index);
    this.known.set(index, addresses);
    return addresses;
  }

  private isWanted(hex: string, bytes: Buffer): boolean {
    const mac = this.bridgeMac(hex);
    const routed = this.desired.routed(hex);
    const number = this.settings.routerNumber();
    if (mac && linkLocal(mac).bytes.equals(bytes)) return routed !== undefined || this.withdrawing.has(hex);
    if (!routed || !('entry' in routed) || number === undefined) return false;
    return bigintToBytes(parseIpv6Prefix(routed.entry.prefix).address | BigInt(number), 16).equals(bytes);
  }

  /** The bridge's MAC is deterministic (host, kind, VNI): what the desired state says is what it has. */
  private bridgeMac(hex: string): Buffer | undefined {
    const underlay = this.facts.underlay;
    const wanted = underlay && this.desired.wanted(hex, underlay);
    return wanted && wanted.wanted && 'network' in wanted ? wanted.network.bridge.mac : undefined;
  }

  private withdraw(hex: string): void {
    const last = this.advertised.get(hex);
    if (!last || this.withdrawing.has(hex)) return;
    this.log.info({ vni: hex, op: 'withdraw' }, `network ${hex} has no IPAM entry any more: ${last.prefix} is advertised with zero lifetimes for ${WITHDRAW_MS / 1000} s, then dropped`);
    this.radvd.set(hex, { ...last, withdrawn: true });
    this.statuses.router(hex, undefined);
    this.withdrawing.set(
      hex,
      this.settings.timers.after(WITHDRAW_MS, () => {
        this.withdrawing.delete(hex);
        this.advertised.delete(hex);
        this.leftovers.add(hex);
        this.radvd.set(hex, undefined);
        this.settings.withdrawn(hex);
      }),
    );
  }

  private cancelWithdrawal(hex: string): void {
    this.withdrawing.get(hex)?.cancel();
    this.withdrawing.delete(hex);
  }

  private forget(hex: string): void {
    this.problems.delete(hex);
    this.awaitingDad.delete(hex);
    this.cancelWithdrawal(hex);
    this.leftovers.delete(hex);
    if (this.advertised.delete(hex)) this.radvd.set(hex, undefined);
    this.statuses.router(hex, undefined);
  }

  private report(hex: string, revision: number, reason: string): void {
    this.problems.set(hex, reason);
    this.statuses.router(hex, { revision, reason } satisfies IpamReport);
  }

  /** What radvd advertises now: a network's report, unless this router has a problem of its own there. */
  radvdReported(outcomes: readonly RadvdOutcome[]): void {
    for (const outcome of outcomes) {
      // A withdrawn prefix has no report: its network has no IPAM entry any more.
      if (outcome.withdrawn || !this.desired.isWanted(outcome.hex) || this.desired.routed(outcome.hex)?.revision !== outcome.revision) continue;
      const problem = this.problems.get(outcome.hex);
      const report: IpamReport =
        problem !== undefined
          ? { revision: outcome.revision, reason: problem }
          : outcome.served
            ? { revision: outcome.revision, prefix: outcome.prefix }
            : { revision: outcome.revision, reason: outcome.reason };
      this.statuses.router(outcome.hex, report);
    }
  }

  private failed(hex: string, revision: number | undefined, error: unknown): Outcome {
    if (!(error instanceof KernelError)) throw error;
    if (revision !== undefined) this.report(hex, revision, error.message);
    return { result: 'failed', reason: error.message };
  }
}

/** fe80::<modified EUI-64 of the bridge's MAC>: deterministic, as the bridge's MAC is. */
function linkLocal(mac: Buffer): WantedAddress {
  return { bytes: bigintToBytes(LINK_LOCAL_PREFIX | eui64InterfaceId(mac), 16), scope: SCOPE_LINK, what: 'link-local address' };
}
