/**
 * What the agent knows of the kernel between dumps: the underlay, which networks may have
 * devices, and each managed bridge's ifindex. Fed by dumps, link events and the agent's own
 * applies; the only owner of that knowledge.
 */
import type { Link } from '../model/link.js';
import type { Underlay } from '../model/network.js';
import { hexFromOwnerAlias } from '../model/identity.js';
import { groupLinksByNetwork, hexFromDeviceName, underlayOf } from '../plan/actual.js';
import type { ActualNetwork } from '../plan/plan.js';

export interface FactsLog {
  info(fields: Record<string, unknown>, msg: string): void;
  error(fields: Record<string, unknown>, msg: string): void;
}

/** A link notification, as the kernel adapter delivers it. */
export interface LinkNotice {
  type: 'new' | 'del';
  link: Link;
}

/** What a link notification means to the agent. */
export interface LinkNoticeMeaning {
  underlayChanged: boolean;
  /** The network whose devices (by name or by our alias) it concerns. */
  network?: string;
  /** A device under another name that held this VNI is gone: the network it blocked may go ahead. */
  vniFreed?: number;
}

/** A vxlan device as seen holding a VNI: the kernel refuses a second one with the same VNI and port. */
export interface VniHolder {
  index: number;
  name: string;
  port?: number;
  alias?: string;
}

export class KernelFacts {
  private current?: Underlay;
  /**
   * Networks that may have a device in the kernel: those of the last dump, of link events since
   * and of the agent's own applies (undefined before the first dump). A wanted network outside it
   * is created without first asking the kernel (two failing RTM_GETLINKs per network in a burst
   * of new networks); creates are exclusive, so a device the agent did not know of fails the
   * create with EEXIST and the network is planned again from the kernel's state.
   */
  private devicesSeen?: Set<string>;
  private readonly bridges = new Map<string, number>();
  /** The other way round: address notifications name only the ifindex, and come one per address. */
  private readonly bridgeNetworks = new Map<number, string>();
  /** Each network's vxlan (by name and our alias of that network) and back: forwarding-entry notifications name only the ifindex. */
  private readonly vxlans = new Map<string, number>();
  private readonly vxlanNetworks = new Map<number, string>();
  private readonly vniHolders = new Map<number, VniHolder>();
  private readonly vniByIndex = new Map<number, number>();

  constructor(
    private readonly underlayName: string,
    private readonly log: FactsLog,
  ) {}

  get underlay(): Underlay | undefined {
    return this.current;
  }

  /** Takes in a full dump; returns the links that concern each network. */
  fromDump(links: Link[]): Map<string, ActualNetwork> {
    this.setUnderlay(links.find((link) => link.name === this.underlayName));
    this.vniHolders.clear();
    this.vniByIndex.clear();
    for (const link of links) this.noteVni(link);
    const byNetwork = groupLinksByNetwork(links);
    this.devicesSeen = new Set(byNetwork.keys());
    this.vxlans.clear();
    this.vxlanNetworks.clear();
    for (const [hex, actual] of byNetwork) {
      if (actual.bridge) this.noteBridge(hex, actual.bridge);
      if (actual.vxlan) this.noteVxlan(hex, actual.vxlan);
    }
    return byNetwork;
  }

  /** Takes in a link notification. */
  fromNotice({ type, link }: LinkNotice): LinkNoticeMeaning {
    const vniFreed = this.forgetVni(link.index, type === 'del' ? undefined : link);
    if (type === 'new') this.noteVni(link);
    if (link.name === this.underlayName || (this.current && link.index === this.current.index)) {
      const next = type === 'new' && link.name === this.underlayName ? link : undefined;
      const changed = next?.index !== this.current?.index || next?.mtu !== this.current?.mtu;
      if (changed) this.setUnderlay(next);
      return { underlayChanged: changed };
    }
    const named = hexFromDeviceName(link.name);
    const network = named?.hex ?? hexFromOwnerAlias(link.alias);
    const freed = vniFreed === undefined ? {} : { vniFreed };
    if (!network) return { underlayChanged: false, ...freed };
    if (type === 'new') this.devicesSeen?.add(network);
    if (type === 'new' && named?.role === 'bridge') this.noteBridge(network, link);
    if (named?.role === 'vxlan' || this.vxlanNetworks.has(link.index)) {
      this.forgetVxlan(link.index);
      if (type === 'new' && named?.role === 'vxlan') this.noteVxlan(named.hex, link);
    }
    return { underlayChanged: false, network, ...freed };
  }

  /** The vxlan device holding this VNI, as last seen. */
  vniHolder(vni: number): VniHolder | undefined {
    return this.vniHolders.get(vni);
  }

  private noteVni(link: Link): void {
    const vni = link.kind === 'vxlan' ? link.vxlan?.id : undefined;
    if (vni === undefined) return;
    this.vniHolders.set(vni, { index: link.index, name: link.name, ...(link.vxlan?.port !== undefined ? { port: link.vxlan.port } : {}), ...(link.alias !== undefined ? { alias: link.alias } : {}) });
    this.vniByIndex.set(link.index, vni);
  }

  /** Forgets what `index` held, unless `still` holds the same VNI; returns the VNI it freed. */
  private forgetVni(index: number, still: Link | undefined): number | undefined {
    const vni = this.vniByIndex.get(index);
    if (vni === undefined) return undefined;
    this.vniByIndex.delete(index);
    if (this.vniHolders.get(vni)?.index === index) this.vniHolders.delete(vni);
    return still?.kind === 'vxlan' && still.vxlan?.id === vni ? undefined : vni;
  }

  /** False only when the last dump and every event since show no device of this network. */
  mayHaveDevices(hex: string): boolean {
    return this.devicesSeen === undefined || this.devicesSeen.has(hex);
  }

  /** The agent is about to create devices of this network. */
  expectDevices(hex: string): void {
    this.devicesSeen?.add(hex);
  }

  /** This network's bridge as last seen (only one carrying a vxnetd alias of this network counts). */
  bridgeIndex(hex: string): number | undefined {
    return this.bridges.get(hex);
  }

  noteBridge(hex: string, bridge: Pick<Link, 'index' | 'alias'>): void {
    if (hexFromOwnerAlias(bridge.alias) === hex) this.setBridge(hex, bridge.index);
  }

  private setBridge(hex: string, index: number): void {
    const before = this.bridges.get(hex);
    if (before !== undefined) this.bridgeNetworks.delete(before);
    this.bridges.set(hex, index);
    this.bridgeNetworks.set(index, hex);
  }

  /** This network's vxlan's ifindex as last seen (only one carrying a vxnetd alias of this network counts). */
  vxlanIndex(hex: string): number | undefined {
    return this.vxlans.get(hex);
  }

  /** The network whose vxlan has this ifindex. */
  networkOfVxlan(index: number): string | undefined {
    return this.vxlanNetworks.get(index);
  }

  noteVxlan(hex: string, vxlan: Pick<Link, 'index' | 'alias'>): void {
    if (hexFromOwnerAlias(vxlan.alias) !== hex) return;
    const before = this.vxlans.get(hex);
    if (before !== undefined) this.vxlanNetworks.delete(before);
    this.vxlans.set(hex, vxlan.index);
    this.vxlanNetworks.set(vxlan.index, hex);
  }

  private forgetVxlan(index: number): void {
    const hex = this.vxlanNetworks.get(index);
    if (hex === undefined) return;
    this.vxlanNetworks.delete(index);
    if (this.vxlans.get(hex) === index) this.vxlans.delete(hex);
  }

  noteCreatedBridge(hex: string, index: number): void {
    this.setBridge(hex, index);
  }

  /** The network whose bridge has this ifindex. */
  networkOfBridge(index: number): string | undefined {
    return this.bridgeNetworks.get(index);
  }

  forgetNetwork(hex: string): void {
    const bridge = this.bridges.get(hex);
    if (bridge !== undefined && this.bridgeNetworks.get(bridge) === hex) this.bridgeNetworks.delete(bridge);
    this.bridges.delete(hex);
    const vxlan = this.vxlans.get(hex);
    if (vxlan !== undefined) this.forgetVxlan(vxlan);
  }

  /** The underlay is gone (the kernel said so in a refusal before any notification did). */
  underlayLost(): void {
    this.setUnderlay(undefined);
  }

  private setUnderlay(link: Link | undefined): void {
    const next = link ? underlayOf(link) : undefined;
    const prev = this.current;
    if (prev?.index === next?.index && prev?.mtu === next?.mtu && prev?.ipv6 === next?.ipv6) return;
    this.current = next;
    if (!next) {
      this.log.error({ device: this.underlayName, op: 'underlay' }, `underlay ${this.underlayName} not found; waiting for it (existing devices are kept)`);
    } else {
      this.log.info({ device: next.name, index: next.index, mtu: next.mtu, op: 'underlay' }, `underlay ${next.name} is ifindex ${next.index}, mtu ${next.mtu}`);
    }
  }
}
