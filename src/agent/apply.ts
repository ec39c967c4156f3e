/**
 * Carries out one network's plan. Atomic per network: devices this apply
 * created are deleted again if a later step fails.
 */
import type { Kernel } from '../kernel/rtnl.js';
import { IN6_ADDR_GEN_MODE_NONE } from '../kernel/codec.js';
import { KernelError } from '../kernel/errors.js';
import { describe, type Operation } from '../plan/operations.js';

export interface ApplyLog {
  info(fields: Record<string, unknown>, msg: string): void;
  warn(fields: Record<string, unknown>, msg: string): void;
}

/** Devices this apply created, by name, with their ifindex where the kernel told it. */
export type CreatedDevices = Map<string, number | undefined>;

export async function applyPlan(kernel: Kernel, ops: readonly Operation[], log: ApplyLog): Promise<CreatedDevices> {
  const created: CreatedDevices = new Map();
  for (const op of ops) {
    const description = describe(op);
    try {
      await applyOne(kernel, op, description, created);
      log.info({ vni: op.hex, device: op.name, op: op.op }, description);
    } catch (error) {
      log.warn({ vni: op.hex, device: op.name, op: op.op, err: (error as Error).message }, `failed: ${description}`);
      await undoCreated(kernel, [...created.keys()], op.hex, log);
      throw error;
    }
  }
  return created;
}

async function applyOne(kernel: Kernel, op: Operation, description: string, created: CreatedDevices): Promise<void> {
  switch (op.op) {
    case 'createBridge':
      created.set(op.name, await kernel.createLink({ name: op.name, kind: 'bridge', mac: op.mac, up: !op.quietIpv6 }, description));
      // A bridge keeps its MTU only when it is set after creation; the kernel ignores IFLA_IFALIAS at creation.
      await kernel.changeLink({ name: op.name, mtu: op.mtu, alias: op.alias, ...quietIpv6(op.quietIpv6) }, `${description}: set mtu and alias${op.quietIpv6 ? ', no IPv6 link-local' : ''}`);
      if (op.quietIpv6) await kernel.changeLink({ name: op.name, up: true }, `${description}: up`);
      return;
    case 'createVxlan': {
      const master = created.get(op.bridge) ?? (await indexOf(kernel, op.bridge, description));
      const index = await kernel.createLink(
        { name: op.name, kind: 'vxlan', mac: op.mac, mtu: op.mtu, master, up: !op.quietIpv6, vxlan: op.vxlan },
        description,
      );
      created.set(op.name, index);
      await kernel.changeLink({ name: op.name, alias: op.alias, ...quietIpv6(op.quietIpv6) }, `${description}: set alias${op.quietIpv6 ? ', no IPv6 link-local' : ''}`);
      if (op.quietIpv6) await kernel.changeLink({ name: op.name, up: true }, `${description}: up`);
      return;
    }
    case 'updateLink': {
      const { mtu, up, alias, addrGenMode } = op.changes;
      const master = op.changes.master === undefined ? undefined : await indexOf(kernel, op.changes.master, description);
      // The kernel brings a device up before it applies IFLA_AF_SPEC: the mode goes first, alone.
      const upLater = up === true && addrGenMode !== undefined;
      await kernel.changeLink(
        {
          name: op.name,
          ...(mtu !== undefined ? { mtu } : {}),
          ...(up !== undefined && !upLater ? { up } : {}),
          ...(alias !== undefined ? { alias } : {}),
          ...(master !== undefined ? { master } : {}),
          ...(addrGenMode !== undefined ? { addrGenMode } : {}),
        },
        description,
      );
      if (upLater) await kernel.changeLink({ name: op.name, up: true }, `${description}: up`);
      return;
    }
    case 'updateVxlan':
      await kernel.changeLink({ name: op.name, kind: 'vxlan', vxlan: op.changes }, description);
      return;
    case 'deleteLink':
      await kernel.deleteLink(op.index, description);
      return;
  }
}

/**
 * No IPv6 link-local on a new device. The kernel refuses IFLA_AF_SPEC in the request that
 * creates a device, and within one request it brings the device up before it applies
 * IFLA_AF_SPEC: so such a device is created down, given the mode, then brought up.
 */
function quietIpv6(wanted: boolean): { addrGenMode?: number } {
  return wanted ? { addrGenMode: IN6_ADDR_GEN_MODE_NONE } : {};
}

async function indexOf(kernel: Kernel, name: string, description: string): Promise<number> {
  const link = await kernel.getLink(name);
  if (!link) throw new KernelError('ENODEV', `${description}: ${name} does not exist`);
  return link.index;
}

async function undoCreated(kernel: Kernel, created: string[], hex: string, log: ApplyLog): Promise<void> {
  for (const name of created.reverse()) {
    try {
      const link = await kernel.getLink(name);
      if (link) await kernel.deleteLink(link.index, `undo: delete ${name}`);
      log.info({ vni: hex, device: name, op: 'undo' }, `undo: deleted ${name} created by the failed apply`);
    } catch (error) {
      log.warn({ vni: hex, device: name, op: 'undo', err: (error as Error).message }, `undo failed for ${name}`);
    }
  }
}
