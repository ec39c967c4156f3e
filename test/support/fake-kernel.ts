/** An in-memory kernel with failNext… hooks, for unit tests of apply/agent (no root). */
import { EventEmitter } from 'node:events';
import { IFF_UP, IN6_ADDR_GEN_MODE_NONE, type BridgeAttributes, type Link } from '../../src/model/link.js';
import type { NewLinkRequest } from '../../src/kernel/link-codec.js';
import { KernelError } from '../../src/kernel/errors.js';
import type { Kernel } from '../../src/kernel/rtnl.js';
import type { Neighbour } from '../../src/model/neighbour.js';
import type { Address } from '../../src/model/address.js';

type Verb = 'create' | 'change' | 'delete' | 'get' | 'dump' | 'neigh_add' | 'neigh_del' | 'neigh_dump' | 'addr_add' | 'addr_del' | 'addr_dump';

/** A fake link also says whether the kernel gave it an IPv6 link-local address. */
export type FakeLink = Link & { linkLocal?: boolean; bridge?: BridgeAttributes };

const IPV6_MIN_MTU = 1280;
const IN6_ADDR_GEN_MODE_EUI64 = 0;

/**
 * IPv6 as the kernel does it: a device of MTU 1280 or more has IPv6 state (mode eui64 by
 * default), gets a link-local address when it goes up unless its mode is none, IFLA_AF_SPEC is
 * refused at creation and, within one change, applied after the device is brought up.
 */
export class FakeKernel implements Kernel {
  readonly events = new EventEmitter();
  readonly links = new Map<number, FakeLink>();
  readonly requests: Array<{ verb: Verb; operation: string }> = [];
  private nextIndex = 1;
  private failures: Array<{ verb: Verb; match: (operation: string) => boolean; errno: string; persistent?: boolean }> = [];

  addLink(link: Omit<Link, 'index'> & { index?: number }): Link {
    const full = { ...link, index: link.index ?? this.nextIndex++ } as Link;
    this.nextIndex = Math.max(this.nextIndex, full.index + 1);
    this.links.set(full.index, full);
    return full;
  }

  byName(name: string): FakeLink | undefined {
    return [...this.links.values()].find((l) => l.name === name);
  }

  /** Every request of this verb whose operation contains `text` fails with errno, until the returned function is called. */
  failEvery(verb: Verb, errno: string, text = ''): () => void {
    const failure = { verb, errno, match: (operation: string) => operation.includes(text), persistent: true };
    this.failures.push(failure);
    return () => {
      this.failures = this.failures.filter((f) => f !== failure);
    };
  }

  /** The next request of this verb whose operation contains `text` fails with errno. */
  failNext(verb: Verb, errno: string, text = ''): void {
    this.failures.push({ verb, errno, match: (operation) => operation.includes(text) });
  }

  mutatingRequests(): string[] {
    return this.requests.filter((r) => r.verb === 'create' || r.verb === 'change' || r.verb === 'delete').map((r) => r.operation);
  }

  /** Forwarding entries (AF_BRIDGE) of every device, as the kernel keeps them. */
  readonly forwarding: Neighbour[] = [];

  /** The destinations of a device's all-zeros entries, as text of their hex bytes, sorted. */
  floodDestinations(name: string): string[] {
    const index = this.byName(name)?.index;
    return this.forwarding
      .filter((n) => n.index === index && n.mac?.every((b) => b === 0))
      .map((n) => n.destination?.toString('hex') ?? '-')
      .sort();
  }

  /** A forwarding entry changed by someone else: stored, and notified as the kernel does. */
  handEditForwarding(type: 'new' | 'del', entry: Neighbour): void {
    const i = this.forwarding.findIndex((n) => sameEntry(n, entry));
    if (i !== -1) this.forwarding.splice(i, 1);
    if (type === 'new') this.forwarding.push({ ...entry });
    if (!this.eventsPaused) this.events.emit('neighbour', { type, neighbour: { ...entry } });
  }

  /** IPv6 addresses of every device. */
  readonly addresses: Address[] = [];

  /** An address changed by someone else (or DAD's verdict): stored, and notified as the kernel does. */
  handEditAddress(type: 'new' | 'del', address: Address): void {
    const i = this.addresses.findIndex((a) => a.index === address.index && a.address.equals(address.address));
    if (i !== -1) this.addresses.splice(i, 1);
    if (type === 'new') this.addresses.push({ ...address });
    if (!this.eventsPaused) this.events.emit('address', { type, address: { ...address } });
  }

  addressRequests(): string[] {
    return this.requests.filter((r) => r.verb === 'addr_add' || r.verb === 'addr_del').map((r) => r.operation);
  }

  async dumpAddresses(): Promise<Address[]> {
    this.record('addr_dump', 'dump addresses');
    return this.addresses.map((a) => ({ ...a }));
  }

  async addAddress(address: Address, operation: string): Promise<void> {
    this.record('addr_add', operation);
    if (!this.links.has(address.index)) throw new KernelError('ENODEV', operation);
    if (this.addresses.some((a) => a.index === address.index && a.address.equals(address.address))) throw new KernelError('EEXIST', operation);
    this.handEditAddress('new', address);
  }

  async deleteAddress(address: Address, operation: string): Promise<void> {
    this.record('addr_del', operation);
    if (!this.addresses.some((a) => a.index === address.index && a.address.equals(address.address))) throw new KernelError('EADDRNOTAVAIL', operation);
    this.handEditAddress('del', address);
  }

  neighbourRequests(): string[] {
    return this.requests.filter((r) => r.verb === 'neigh_add' || r.verb === 'neigh_del').map((r) => r.operation);
  }

  async dumpForwardingEntries(index?: number): Promise<Neighbour[]> {
    this.record('neigh_dump', 'dump forwarding entries');
    return this.forwarding.filter((n) => index === undefined || n.index === index).map((n) => ({ ...n }));
  }

  async appendForwardingEntry(entry: Neighbour, operation: string): Promise<void> {
    this.record('neigh_add', operation);
    if (!this.links.has(entry.index)) throw new KernelError('ENODEV', operation);
    if (this.forwarding.some((n) => sameEntry(n, entry))) return;
    this.handEditForwarding('new', entry);
  }

  async deleteForwardingEntry(entry: Neighbour, operation: string): Promise<void> {
    this.record('neigh_del', operation);
    if (!this.forwarding.some((n) => sameEntry(n, entry))) throw new KernelError('ENOENT', operation);
    this.handEditForwarding('del', entry);
  }

  private emitLink(type: 'new' | 'del', link: Link): void {
    if (!this.eventsPaused) this.events.emit('link', { type, link: { ...link } });
  }

  private record(verb: Verb, operation: string): void {
    this.requests.push({ verb, operation });
    const i = this.failures.findIndex((f) => f.verb === verb && f.match(operation));
    if (i !== -1) {
      const failure = this.failures[i]!;
      if (!failure.persistent) this.failures.splice(i, 1);
      throw new KernelError(failure.errno, operation);
    }
  }

  async dumpLinks(): Promise<Link[]> {
    this.record('dump', 'dump links');
    return [...this.links.values()].map((l) => ({ ...l }));
  }

  async getLink(name: string): Promise<Link | undefined> {
    this.record('get', `get link ${name}`);
    const link = this.byName(name);
    return link && { ...link };
  }

  /** Kernels before 6.2 do not echo a new link; set false to take that path. */
  echoesCreates = true;

  async createLink(req: NewLinkRequest, operation: string): Promise<number | undefined> {
    this.record('create', operation);
    if (this.byName(req.name!)) throw new KernelError('EEXIST', operation);
    if (req.addrGenMode !== undefined) throw new KernelError('EAFNOSUPPORT', operation);
    const mtu = req.mtu ?? 1500;
    const link: FakeLink = this.addLink({
      name: req.name!,
      kind: req.kind,
      flags: 0,
      mtu,
      ...(this.ipv6 && mtu >= IPV6_MIN_MTU ? { addrGenMode: IN6_ADDR_GEN_MODE_EUI64 } : {}),
      ...(req.mac ? { mac: req.mac } : {}),
      ...(req.master !== undefined ? { master: req.master } : {}),
      ...(req.vxlan ? { vxlan: { ...req.vxlan } } : {}),
      ...(req.bridge ? { bridge: { ...req.bridge } } : {}),
    });
    if (req.up) this.bringUp(link);
    this.emitLink('new', link);
    return this.echoesCreates ? link.index : undefined;
  }

  async changeLink(req: NewLinkRequest, operation: string): Promise<void> {
    this.record('change', operation);
    const link = req.index ? this.links.get(req.index) : this.byName(req.name!);
    if (!link) throw new KernelError('ENODEV', operation);
    if (req.addrGenMode !== undefined && link.addrGenMode === undefined) throw new KernelError('EAFNOSUPPORT', operation);
    if (req.mtu !== undefined) link.mtu = req.mtu;
    if (req.alias !== undefined) link.alias = req.alias;
    if (req.master !== undefined) link.master = req.master;
    if (req.up === true) this.bringUp(link);
    if (req.up === false) {
      link.flags &= ~IFF_UP;
      delete link.linkLocal;
    }
    if (req.vxlan) link.vxlan = { ...link.vxlan, ...req.vxlan };
    if (req.addrGenMode !== undefined) link.addrGenMode = req.addrGenMode;
    this.emitLink('new', link);
  }

  /** Whether devices get IPv6 state (a kernel booted with ipv6.disable=1 has none). */
  ipv6 = true;

  private bringUp(link: FakeLink): void {
    if (!(link.flags & IFF_UP) && link.addrGenMode !== undefined && link.addrGenMode !== IN6_ADDR_GEN_MODE_NONE) link.linkLocal = true;
    link.flags |= IFF_UP;
  }

  async deleteLink(index: number, operation: string): Promise<void> {
    this.record('delete', operation);
    const link = this.links.get(index);
    if (!link) throw new KernelError('ENODEV', operation);
    this.links.delete(index);
    for (const other of this.links.values()) if (other.master === index) delete other.master;
    for (let i = this.forwarding.length - 1; i >= 0; i--) if (this.forwarding[i]!.index === index) this.forwarding.splice(i, 1);
    for (let i = this.addresses.length - 1; i >= 0; i--) if (this.addresses[i]!.index === index) this.addresses.splice(i, 1);
    this.emitLink('del', link);
  }

  eventsPaused = false;
  pauses = 0;

  pauseEvents(): void {
    this.eventsPaused = true;
    this.pauses++;
  }

  resumeEvents(): void {
    this.eventsPaused = false;
  }

  async close(): Promise<void> {}
}

function sameEntry(a: Neighbour, b: Neighbour): boolean {
  const same = (x?: Buffer, y?: Buffer) => (x === undefined || y === undefined ? x === y : x.equals(y));
  return a.index === b.index && same(a.mac, b.mac) && same(a.destination, b.destination);
}
