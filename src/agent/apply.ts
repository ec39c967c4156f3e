/**
 * Carries out one network's plan. Atomic per network: devices this apply
 * created are deleted again if a later step fails.
 */
import type { Kernel } from '../kernel/rtnl.js';
import { IN6_ADDR_GEN_MODE_NONE } from '../model/link.js';
import type { NewLinkRequest } from '../kernel/link-codec.js';
import { KernelError } from '../kernel/errors.js';
import { describe, type CreateBridge, type CreateVxlan, type Operation } from '../plan/operations.js';

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
      created.set(op.name, await kernel.createLink(
        { name: op.name, kind: 'bridge', mac: op.mac, up: !op.quietIpv6, bridge: { multicastSnooping: op.multicastSnooping } },
        description,
      ));
      // A bridge keeps its MTU only when it is set after creation.
      await settleNewDevice(kernel, op, { mtu: op.mtu, alias: op.alias }, 'mtu and alias', description);
      return;
    case 'createVxlan': {
      const master = created.get(op.bridge) ?? (await indexOf(kernel, op.bridge, description));
      const index = await kernel.createLink(
        { name: op.name, kind: 'vxlan', mac: op.mac, mtu: op.mtu, master, up: !op.quietIpv6, vxlan: op.vxlan },
        description,
      );
      created.set(op.name, index);
      await settleNewDevice(kernel, op, { alias: op.alias }, 'alias', description);
      return;
    }
    case 'updateLink': {
      const { mtu, up, alias, addrGenMode } = op.changes;
      const master = op.changes.master === undefined ? undefined : await indexOf(kernel, op.changes.master, description);
      await changeLinkModeFirst(
        kernel,
        {
          name: op.name,
          ...(mtu !== undefined ? { mtu } : {}),
          ...(up !== undefined ? { up } : {}),
          ...(alias !== undefined ? { alias } : {}),
          ...(master !== undefined ? { master } : {}),
          ...(addrGenMode !== undefined ? { addrGenMode } : {}),
        },
        description,
      );
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
 * What a new device gets right after its create: `settings` (the kernel ignores IFLA_IFALIAS at
 * creation) and, for one without IPv6 link-local, the mode and then up. The kernel refuses
 * IFLA_AF_SPEC in the creating request, so such a device was created down.
 */
function settleNewDevice(kernel: Kernel, op: CreateBridge | CreateVxlan, settings: NewLinkRequest, what: string, description: string): Promise<void> {
  const quiet = op.quietIpv6 ? { addrGenMode: IN6_ADDR_GEN_MODE_NONE, up: true } : {};
  return changeLinkModeFirst(kernel, { name: op.name, ...settings, ...quiet }, `${description}: set ${what}${op.quietIpv6 ? ', no IPv6 link-local' : ''}`, `${description}: up`);
}

/**
 * One change, except that an `up` sent with an IPv6 address generation mode goes in a request
 * of its own after it: within one request the kernel brings the device up first, and makes the
 * link-local address the mode was to prevent.
 */
async function changeLinkModeFirst(kernel: Kernel, req: NewLinkRequest, description: string, upDescription = `${description}: up`): Promise<void> {
  if (req.up !== true || req.addrGenMode === undefined) return kernel.changeLink(req, description);
  const { up: _upLater, ...modeFirst } = req;
  await kernel.changeLink(modeFirst, description);
  await kernel.changeLink({ name: req.name!, up: true }, upDescription);
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
