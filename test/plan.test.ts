import { describe, expect, it } from 'vitest';
import { IFF_UP, type Link } from '../src/model/link.js';
import { describe as describeOp, type Operation } from '../src/plan/operations.js';
import { groupLinksByNetwork } from '../src/plan/actual.js';
import { deviceMatches, planNetwork, type ActualNetwork } from '../src/plan/plan.js';
import { aliasOf, desired, IDENTITY, ownership } from './support/fixtures.js';
import { identityText } from '../src/model/identity.js';

const VNI = 0xff01;
const HEX = 'ff01';
const want = desired(VNI);
const ALIAS = aliasOf(VNI);
const OTHER = identityText({ host: 'hv9', etcdCluster: 'cdf818194e3a8c32', prefix: '/v1' });

function bridge(overrides: Partial<Link> = {}): Link {
  return { index: 10, name: 'brff01', kind: 'bridge', flags: IFF_UP, mtu: 1430, alias: ALIAS, mac: want.bridge.mac, ...overrides };
}

function vxlan(overrides: Partial<Link> = {}, data: Partial<NonNullable<Link['vxlan']>> = {}): Link {
  return {
    index: 11,
    name: 'vxlanff01',
    kind: 'vxlan',
    flags: IFF_UP,
    mtu: 1430,
    master: 10,
    alias: ALIAS,
    mac: want.vxlan.mac,
    vxlan: { id: VNI, group: want.vxlan.group.bytes, link: 2, ttl: 5, learning: true, port: 4789, ...data },
    ...overrides,
  };
}

const summary = (ops: Operation[]) => ops.map(describeOp);

describe('planNetwork', () => {
  const cases: Array<{ name: string; desired: typeof want | undefined; actual: ActualNetwork; ops: string[]; conflicts?: number }> = [
    {
      name: 'nothing there: bridge then vxlan',
      desired: want,
      actual: { strays: [] },
      ops: ['create bridge brff01 (mtu 1430, multicast snooping off)', 'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)'],
    },
    { name: 'converged: nothing at all', desired: want, actual: { bridge: bridge(), vxlan: vxlan(), strays: [] }, ops: [] },
    {
      name: 'bridge exists, vxlan missing',
      desired: want,
      actual: { bridge: bridge(), strays: [] },
      ops: ['create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)'],
    },
    {
      name: 'mtu changed: both updated in place, vxlan mtu in its own message',
      desired: desired(VNI, 1400),
      actual: { bridge: bridge(), vxlan: vxlan(), strays: [] },
      ops: ['update brff01: mtu 1400', 'update vxlanff01: mtu 1400'],
    },
    {
      name: 'downed and detached by hand',
      desired: want,
      actual: { bridge: bridge({ flags: 0 }), vxlan: vxlan({ flags: 0, master: undefined }), strays: [] },
      ops: ['update brff01: up', 'update vxlanff01: up, master brff01'],
    },
    {
      name: 'ttl and group changed: vxlan updated in place',
      desired: want,
      actual: { bridge: bridge(), vxlan: vxlan({}, { ttl: 9, group: Buffer.from('ff050000000000000000000000000001', 'hex') }), strays: [] },
      ops: ['update vxlan vxlanff01: group ff05::ff01, ttl 5'],
    },
    {
      name: 'wrong dstport: only the vxlan is replaced, the bridge stays',
      desired: want,
      actual: { bridge: bridge(), vxlan: vxlan({}, { port: 8472 }), strays: [] },
      ops: [
        'delete vxlanff01 (dstport 8472 must be 4789, which the kernel cannot change)',
        'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      ],
    },
    {
      name: 'wrong id: vxlan replaced',
      desired: want,
      actual: { bridge: bridge(), vxlan: vxlan({}, { id: 7 }), strays: [] },
      ops: [
        'delete vxlanff01 (id 7 must be 65281, which the kernel cannot change)',
        'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      ],
    },
    {
      name: 'created but alias never set (crash in between): adopted by MAC',
      desired: want,
      actual: { bridge: bridge({ alias: undefined }), vxlan: vxlan({ alias: undefined }), strays: [] },
      ops: [`update brff01: alias ${ALIAS}`, `update vxlanff01: alias ${ALIAS}`],
    },
    {
      name: 'made by vxnetd 0.1 (alias vxnetd:<hex>): adopted in place, the alias its only change',
      desired: want,
      actual: { bridge: bridge({ alias: 'vxnetd:ff01' }), vxlan: vxlan({ alias: 'vxnetd:ff01' }), strays: [] },
      ops: [`update brff01: alias ${ALIAS}`, `update vxlanff01: alias ${ALIAS}`],
    },
    {
      name: 'of another identity (host renamed, other prefix or etcd cluster): conflict, nothing touched',
      desired: want,
      actual: { bridge: bridge({ alias: `vxnetd:ff01 ${OTHER} net=1` }), vxlan: vxlan({ alias: `vxnetd:ff01 ${OTHER} net=1` }), strays: [] },
      ops: [],
      conflicts: 2,
    },
    {
      name: 'of an earlier network with the same VNI: both re-created, so its ports do not join the new network',
      desired: desired(VNI, undefined, {}, 7),
      actual: { bridge: bridge(), vxlan: vxlan(), strays: [] },
      ops: [
        'delete vxlanff01 (belongs to an earlier network ff01 (incarnation 1, now 7))',
        'delete brff01 (belongs to an earlier network ff01 (incarnation 1, now 7): re-created, so that its ports do not join the new network)',
        'create bridge brff01 (mtu 1430, multicast snooping off)',
        'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      ],
    },
    {
      name: 'network removed: devices of another identity are left alone',
      desired: undefined,
      actual: { bridge: bridge({ alias: `vxnetd:ff01 ${OTHER} net=1` }), vxlan: vxlan({ alias: `vxnetd:ff01 ${OTHER} net=1` }), strays: [] },
      ops: [],
    },
    {
      name: 'network removed: devices of vxnetd 0.1 are left alone (they could be any prefix\'s)',
      desired: undefined,
      actual: { bridge: bridge({ alias: 'vxnetd:ff01' }), vxlan: vxlan({ alias: 'vxnetd:ff01' }), strays: [] },
      ops: [],
    },
    {
      name: 'network removed: devices of an earlier incarnation of ours are deleted',
      desired: undefined,
      actual: { bridge: bridge({ alias: aliasOf(VNI, 3) }), vxlan: vxlan({ alias: aliasOf(VNI, 3) }), strays: [] },
      ops: ['delete vxlanff01 (network removed)', 'delete brff01 (network removed)'],
    },
    {
      name: 'foreign bridge with our name: conflict, nothing touched',
      desired: want,
      actual: { bridge: bridge({ alias: undefined, mac: Buffer.from('020000000001', 'hex') }), strays: [] },
      ops: [],
      conflicts: 1,
    },
    {
      name: 'foreign vxlan with another alias: conflict',
      desired: want,
      actual: { bridge: bridge(), vxlan: vxlan({ alias: 'someone-else' }), strays: [] },
      ops: [],
      conflicts: 1,
    },
    {
      name: 'network removed: vxlan then bridge',
      desired: undefined,
      actual: { bridge: bridge(), vxlan: vxlan(), strays: [] },
      ops: ['delete vxlanff01 (network removed)', 'delete brff01 (network removed)'],
    },
    {
      name: 'network removed: foreign devices with our names are never deleted',
      desired: undefined,
      actual: { bridge: bridge({ alias: 'mine', mac: Buffer.alloc(6) }), strays: [] },
      ops: [],
    },
    {
      name: 'our vxlan renamed by hand: the stray is deleted, the real one created',
      desired: want,
      actual: { bridge: bridge(), strays: [vxlan({ name: 'renamed0' })] },
      ops: [
        "delete renamed0 (carries this network's alias under another name)",
        'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      ],
    },
    {
      name: 'a veth someone labelled with our alias under the bridge name: a conflict, never deleted or changed',
      desired: want,
      actual: { bridge: bridge({ kind: 'veth' }), vxlan: vxlan(), strays: [] },
      ops: [],
      conflicts: 1,
    },
    {
      name: 'a renamed bridge of ours (it may have ports) and a labelled tap: left alone; a renamed vxlan of ours is deleted (it holds the VNI)',
      desired: want,
      actual: { bridge: bridge(), strays: [bridge({ index: 20, name: 'oldbr' }), bridge({ index: 21, name: 'tap0', kind: 'tun' }), vxlan({ index: 22, name: 'oldvx' })] },
      ops: ["delete oldvx (carries this network's alias under another name)", 'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)'],
    },
    {
      name: 'network removed: a labelled tap with our alias is left alone',
      desired: undefined,
      actual: { bridge: bridge(), vxlan: vxlan(), strays: [bridge({ index: 21, name: 'tap0', kind: 'tun' })] },
      ops: ['delete vxlanff01 (network removed)', 'delete brff01 (network removed)'],
    },
    {
      name: 'group base moved from IPv6 to IPv4: the vxlan is replaced (the kernel cannot change the family in place), the bridge stays',
      desired: want,
      actual: { bridge: bridge(), vxlan: vxlan({}, { group: Buffer.from([239, 0, 255, 1]) }), strays: [] },
      ops: [
        'delete vxlanff01 (group 239.0.255.1 must become ff05::ff01, another address family, which the kernel cannot change in place)',
        'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      ],
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const plan = planNetwork(HEX, c.desired, c.actual, ownership(VNI));
      expect(summary(plan.ops)).toEqual(c.ops);
      expect(plan.conflicts).toHaveLength(c.conflicts ?? 0);
    });
  }

  it('a device of the wrong kind is named in the report with what it is', () => {
    const plan = planNetwork(HEX, want, { bridge: bridge({ kind: 'veth' }), strays: [] }, ownership(VNI));
    expect(plan.conflicts[0]).toBe(`device brff01 carries vxnetd's alias (${JSON.stringify(ALIAS)}) but is a veth, not a bridge: left alone; remove or rename it`);
    const removed = planNetwork(HEX, undefined, { strays: [bridge({ index: 21, name: 'tap0', kind: 'tun' })] }, ownership(VNI));
    expect(removed.leftAlone).toEqual([`device tap0 carries vxnetd's alias (${JSON.stringify(ALIAS)}) but is a tun under another name: left alone; remove or rename it`]);
  });

  it('devices of another identity are reported, with the take-over that would adopt them', () => {
    const other = { bridge: bridge({ alias: `vxnetd:ff01 ${OTHER} net=1` }), strays: [] };
    expect(planNetwork(HEX, want, other, ownership(VNI)).conflicts[0]).toBe(
      `device brff01 belongs to vxnetd of another identity (${OTHER}): left alone; if this host was renamed or moved to another etcd cluster, take its devices over with --take-over "${OTHER}"`,
    );
    expect(planNetwork(HEX, undefined, other, ownership(VNI)).leftAlone).toHaveLength(1);
    // Taken over: adopted in place.
    const adopted = planNetwork(HEX, want, other, ownership(VNI, OTHER));
    expect(adopted.conflicts).toEqual([]);
    expect(summary(adopted.ops)).toEqual([`update brff01: alias ${ALIAS}`, expect.stringMatching(/^create vxlan vxlanff01/)]);
    expect(IDENTITY).not.toBe(OTHER);
  });

  it('conflict reason names the device and what to do', () => {
    const plan = planNetwork(HEX, want, { bridge: bridge({ alias: 'ops-test', mac: Buffer.alloc(6) }), strays: [] }, ownership(VNI));
    expect(plan.conflicts[0]).toMatch(/brff01 exists and is not managed by vxnetd .*"ops-test".*remove or rename/);
  });
});

describe('groupLinksByNetwork', () => {
  it('files links by name and by owner alias, ignoring others', () => {
    const grouped = groupLinksByNetwork([
      bridge(),
      vxlan(),
      { index: 3, name: 'eth0', flags: 0, mtu: 1500 },
      { index: 4, name: 'brFF01', flags: 0, mtu: 1500 },
      { index: 5, name: 'renamed', flags: 0, mtu: 1500, alias: aliasOf(0x64) },
      { index: 6, name: 'br0ff', flags: 0, mtu: 1500 },
    ]);
    expect([...grouped.keys()].sort()).toEqual(['64', 'ff01']);
    expect(grouped.get('ff01')?.bridge?.index).toBe(10);
    expect(grouped.get('ff01')?.vxlan?.index).toBe(11);
    expect(grouped.get('64')?.strays.map((l) => l.name)).toEqual(['renamed']);
  });
});

describe('deviceMatches (is a link notification already the desired state?)', () => {
  const owner = ownership(VNI);
  const cases: Array<[string, Link, boolean]> = [
    ['converged bridge', bridge(), true],
    ['converged vxlan on its bridge', vxlan(), true],
    ['bridge down', bridge({ flags: 0 }), false],
    ['bridge with another mtu', bridge({ mtu: 1400 }), false],
    ['bridge without its alias yet (just created)', bridge({ alias: undefined }), false],
    ['bridge of an earlier incarnation', bridge({ alias: aliasOf(VNI, 3) }), false],
    ['bridge of vxnetd 0.1', bridge({ alias: 'vxnetd:ff01' }), false],
    ['vxlan detached', vxlan({ master: undefined }), false],
    ['vxlan on another bridge', vxlan({ master: 99 }), false],
    ['vxlan ttl changed by hand', vxlan({}, { ttl: 9 }), false],
    ['vxlan group changed by hand', vxlan({}, { group: desired(0x99).vxlan.group.bytes }), false],
    ['vxlan id changed (re-created by someone)', vxlan({}, { id: 7 }), false],
    ['foreign device with our name', bridge({ alias: 'theirs', mac: Buffer.alloc(6) }), false],
    ['device of another name', bridge({ name: 'brff02' }), false],
  ];
  it.each(cases)('%s → %s', (_name, link, expected) => {
    expect(deviceMatches(want, link, owner, 10)).toBe(expected);
  });

  it('a vxlan cannot be judged before its bridge is known', () => {
    expect(deviceMatches(want, vxlan(), owner, undefined)).toBe(false);
  });
});
