import { describe, expect, it } from 'vitest';
import { IFF_UP, type Link } from '../src/model/link.js';
import { describe as describeOp, type Operation } from '../src/plan/operations.js';
import { groupLinksByNetwork } from '../src/plan/actual.js';
import { deviceMatches, planNetwork, type ActualNetwork } from '../src/plan/plan.js';
import { desired, ownership } from './support/fixtures.js';

const VNI = 0xff01;
const HEX = 'ff01';
const want = desired(VNI);

function bridge(overrides: Partial<Link> = {}): Link {
  return { index: 10, name: 'brff01', kind: 'bridge', flags: IFF_UP, mtu: 1430, alias: 'vxnetd:ff01', mac: want.bridge.mac, ...overrides };
}

function vxlan(overrides: Partial<Link> = {}, data: Partial<NonNullable<Link['vxlan']>> = {}): Link {
  return {
    index: 11,
    name: 'vxlanff01',
    kind: 'vxlan',
    flags: IFF_UP,
    mtu: 1430,
    master: 10,
    alias: 'vxnetd:ff01',
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
      ops: ['update brff01: alias vxnetd:ff01', 'update vxlanff01: alias vxnetd:ff01'],
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
        'delete renamed0 (carries vxnetd:ff01 under another name)',
        'create vxlan vxlanff01 (id 65281, group ff05::ff01, port 4789, ttl 5, mtu 1430, master brff01)',
      ],
    },
    {
      name: 'bridge of the wrong kind but ours: replaced, vxlan re-enslaved',
      desired: want,
      actual: { bridge: bridge({ kind: 'veth' }), vxlan: vxlan(), strays: [] },
      ops: ['delete brff01 (is a veth of unknown kind, not a bridge)', 'create bridge brff01 (mtu 1430, multicast snooping off)', 'update vxlanff01: master brff01'],
    },
  ];

  for (const c of cases) {
    it(c.name, () => {
      const plan = planNetwork(HEX, c.desired, c.actual, ownership(VNI));
      expect(summary(plan.ops)).toEqual(c.ops);
      expect(plan.conflicts).toHaveLength(c.conflicts ?? 0);
    });
  }

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
      { index: 5, name: 'renamed', flags: 0, mtu: 1500, alias: 'vxnetd:64' },
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
