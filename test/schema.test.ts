/** The etcd data model: key builders and parsers, values, and the one wording of each refusal. */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { nonCanonicalVniReason } from '../src/model/vni.js';
import {
  EtcdSchema,
  hostnameProblem,
  parseAttachment,
  parseDeletedNetwork,
  parseLiveness,
  parseOwnerIndex,
  parseSpec,
  parseSettings,
  parseStatus,
  serializeAttachment,
  serializeDeletedNetwork,
  serializeLiveness,
  serializeOwnerIndex,
  serializeSettings,
  serializeSpec,
  serializeStatus,
  type AgentLiveness,
  type NetworkStatus,
  type ParsedKey,
} from '../src/store/schema.js';

const schema = new EtcdSchema('/v1');
const bytes = (text: string) => Buffer.from(text);
const hostMessage = (host: string) =>
  `host name ${JSON.stringify(host)} is not valid: use letters, digits and inner hyphens, in dot-separated labels of 1…63 characters, at most 253 in all`;

describe('keys', () => {
  const sha = createHash('sha256').update('customer-42').digest('hex');
  it.each<[string, string, ParsedKey]>([
    [schema.networkKey(0xff01), '/v1/networks/ff01', { kind: 'network', vni: 0xff01, hex: 'ff01' }],
    [schema.networkKey('ffffff'), '/v1/networks/ffffff', { kind: 'network', vni: 0xffffff, hex: 'ffffff' }],
    [schema.attachmentKey('hv-1', 1), '/v1/hosts/hv-1/networks/1', { kind: 'attachment', host: 'hv-1', vni: 1, hex: '1' }],
    [schema.statusKey('hv-1.example', 'a'), '/v1/hosts/hv-1.example/status/a', { kind: 'status', host: 'hv-1.example', vni: 10, hex: 'a' }],
    [schema.agentKey('HV1'), '/v1/hosts/HV1/agent', { kind: 'agent', host: 'HV1' }],
    [schema.ownerKey('customer-42'), `/v1/owners/${sha}`, { kind: 'owner', digest: sha }],
    [schema.deletedKey(0xff01), '/v1/deleted/ff01', { kind: 'deleted', vni: 0xff01, hex: 'ff01' }],
    [schema.settingsKey, '/v1/settings', { kind: 'settings' }],
    [schema.memberKey(0xff01, 'hv-1'), '/v1/members/ff01/hv-1', { kind: 'member', vni: 0xff01, hex: 'ff01', host: 'hv-1' }],
  ])('%s is built and parsed back', (built, key, parsed) => {
    expect(built).toBe(key);
    expect(schema.parseKey(key)).toEqual(parsed);
  });

  it('names the directories the agent lists and watches', () => {
    expect([schema.networksDir, schema.hostsDir, schema.ownersDir, schema.deletedDir]).toEqual(['/v1/networks/', '/v1/hosts/', '/v1/owners/', '/v1/deleted/']);
    // With the trailing slash: the members of 1 are not those of 10.
    expect([schema.membersDir, schema.membersOf(1)]).toEqual(['/v1/members/', '/v1/members/1/']);
    expect([schema.hostDir('h1'), schema.attachmentsDir('h1'), schema.statusesDir('h1')]).toEqual(['/v1/hosts/h1/', '/v1/hosts/h1/networks/', '/v1/hosts/h1/status/']);
    expect(schema.nameIn(schema.networksDir, '/v1/networks/FF01')).toBe('FF01');
    expect(() => schema.nameIn(schema.networksDir, '/v2/networks/1')).toThrow('key "/v2/networks/1" is not under /v1/networks/');
    // Another prefix is another data model.
    expect(new EtcdSchema('/test7').networkKey(1)).toBe('/test7/networks/1');
  });

  it.each<[string, string]>([
    ['/v1/networks/FF01', nonCanonicalVniReason('FF01')],
    ['/v1/networks/0ff01', nonCanonicalVniReason('0ff01')],
    ['/v1/networks/ff01 ', nonCanonicalVniReason('ff01 ')],
    ['/v1/networks/1000000', nonCanonicalVniReason('1000000')],
    ['/v1/networks/64/x', nonCanonicalVniReason('64/x')],
    ['/v1/hosts/h1/status/g1', nonCanonicalVniReason('g1')],
    ['/v1/hosts/h1/networks/0', nonCanonicalVniReason('0')],
    ['/v1/hosts/a b/networks/1', hostMessage('a b')],
    ['/v1/hosts//agent', hostMessage('')],
    ['/v1/hosts/h1/agent/x', 'not a key of the data model (expected agent, networks/<vni-hex> or status/<vni-hex>)'],
    ['/v1/hosts/h1/status/1/x', 'not a key of the data model (expected agent, networks/<vni-hex> or status/<vni-hex>)'],
    ['/v1/hosts/h1', 'not a key of the data model (expected agent, networks/<vni-hex> or status/<vni-hex>)'],
    ['/v1/owners/customer-42', 'not an owner index key (expected a SHA-256 in hex)'],
    ['/v1/deleted/FF01', nonCanonicalVniReason('FF01')],
    ['/v1/members/FF01/h1', nonCanonicalVniReason('FF01')],
    ['/v1/members/ff01', 'not a member key (expected members/<vni-hex>/<host>)'],
    ['/v1/members/ff01/h1/x', 'not a member key (expected members/<vni-hex>/<host>)'],
    ['/v1/members/ff01/a b', hostMessage('a b')],
    ['/v1/settings/x', 'not a key of the data model under /v1/'],
    ['/v1/other', 'not a key of the data model under /v1/'],
  ])('%j is not a key of the data model', (key, reason) => {
    expect(schema.parseKey(key)).toEqual({ kind: 'invalid', reason });
  });

  it.each<[() => string, string]>([
    [() => schema.attachmentKey('a b', 1), hostMessage('a b')],
    [() => schema.agentKey('a/b'), hostMessage('a/b')],
    [() => schema.statusKey('h1', 'FF01'), nonCanonicalVniReason('FF01')],
    [() => schema.networkKey(0), 'VNI 0 is outside 1…16777215'],
    [() => schema.networkKey(0x1000000), 'VNI 16777216 is outside 1…16777215'],
  ])('builders refuse what no key may contain (%#)', (build, message) => {
    expect(build).toThrow(RangeError);
    expect(build).toThrow(message);
  });
});

describe('host names', () => {
  it.each(['h1', 'hv-1', 'hv-1.example', 'node01.dc1.example.com', 'HV1', 'a', '4c2f9a1b7e3d', 'x'.repeat(63), ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(61)].join('.')])(
    'accepts %j',
    (host) => expect(hostnameProblem(host)).toBeUndefined(),
  );

  it("accepts this machine's host name (vxnetd's default)", () => {
    expect(hostnameProblem(hostname())).toBeUndefined();
  });

  it.each(['', 'a b', 'a/b', 'hv\t1', 'hv\n1', 'hv\u00001', '-hv1', 'hv1-', 'hv..1', '.hv1', 'hv1.', 'hv_1', 'hv:1', 'hÿ1', 'x'.repeat(64), ['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(62)].join('.')])(
    'refuses %j with the one message',
    (host) => expect(hostnameProblem(host)).toBe(hostMessage(host)),
  );
});

describe('the VNI message', () => {
  it.each([
    ['FF01', '"FF01" is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff; did you mean ff01?'],
    [' 0a ', '" 0a " is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff; did you mean a?'],
    ['g1', '"g1" is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff'],
    ['0', '"0" is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff'],
    ['1000000', '"1000000" is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff'],
  ])('%j', (text, message) => expect(nonCanonicalVniReason(text)).toBe(message));
});

describe('values', () => {
  const ready: NetworkStatus = { state: 'ready', vxlan: 'vxlanff01', bridge: 'brff01', mtu: 1430, specRevision: 7, updatedAt: '2025-01-01T00:00:00.000Z' };
  const failed: NetworkStatus = { state: 'error', reason: 'mtu 9000 exceeds underlay u0 limit 1430', vxlan: 'vxlanff01', bridge: 'brff01', updatedAt: '2025-01-01T00:00:00.000Z' };
  const agent: AgentLiveness = { version: '0.1.0', pid: 42, startedAt: '2025-01-01T00:00:00.000Z', underlay: 'u0', underlayAddress: '2001:db8::1', ready: true };

  it('statuses round-trip, with their fields in the contract order whatever order they were given in', () => {
    for (const status of [ready, failed]) expect(parseStatus(bytes(serializeStatus(status)))).toEqual({ ok: true, value: status });
    const { updatedAt, state, ...rest } = failed;
    expect(serializeStatus({ updatedAt, ...rest, state })).toBe(
      '{"state":"error","reason":"mtu 9000 exceeds underlay u0 limit 1430","vxlan":"vxlanff01","bridge":"brff01","updatedAt":"2025-01-01T00:00:00.000Z"}',
    );
    // Fields a newer agent may add are ignored.
    expect(parseStatus(bytes(JSON.stringify({ ...ready, extra: 1 })))).toEqual({ ok: true, value: ready });
  });

  it('liveness round-trips; an underlay without an address leaves the field out', () => {
    expect(parseLiveness(bytes(serializeLiveness(agent)))).toEqual({ ok: true, value: agent });
    const { underlayAddress: _, ...noAddress } = agent;
    expect(serializeLiveness(noAddress)).toBe('{"version":"0.1.0","pid":42,"startedAt":"2025-01-01T00:00:00.000Z","underlay":"u0","ready":true}');
    expect(parseLiveness(bytes(serializeLiveness(noAddress)))).toEqual({ ok: true, value: noAddress });
  });

  it('attachments are any JSON object; specs and owner indexes round-trip', () => {
    expect(serializeAttachment()).toBe('{}');
    expect(parseAttachment(bytes('{"vm":"a"}'))).toEqual({ ok: true, value: { vm: 'a' } });
    expect(parseSpec(bytes(serializeSpec({ type: 'vxlan', mtu: 1400, owner: 'o' })))).toEqual({ ok: true, spec: { type: 'vxlan', mtu: 1400, owner: 'o' } });
    expect(serializeOwnerIndex(0xff01)).toBe('ff01');
    expect(parseOwnerIndex(bytes('ff01'))).toBe(0xff01);
    expect(parseOwnerIndex(bytes('FF01'))).toBeUndefined();
  });

  it('quarantine records round-trip, with or without an owner', () => {
    const record = { deletedAt: '2026-01-01T00:00:00.000Z', owner: 'customer-42' };
    expect(serializeDeletedNetwork(record)).toBe('{"deletedAt":"2026-01-01T00:00:00.000Z","owner":"customer-42"}');
    expect(parseDeletedNetwork(bytes(serializeDeletedNetwork(record)))).toEqual({ ok: true, value: record });
    expect(parseDeletedNetwork(bytes(serializeDeletedNetwork({ deletedAt: record.deletedAt })))).toEqual({ ok: true, value: { deletedAt: record.deletedAt } });
  });

  it('settings carry a group base in its canonical form, validated as --group-base is, and keep unknown fields', () => {
    expect(parseSettings(bytes('{"groupBase":"FF05:0:0::","later":1}'))).toEqual({ ok: true, value: { groupBase: 'ff05::', later: 1 } });
    expect(parseSettings(bytes('{"groupBase":"239.0.0.0"}'))).toEqual({ ok: true, value: { groupBase: '239.0.0.0' } });
    expect(parseSettings(bytes('{}'))).toEqual({ ok: true, value: {} });
    expect(parseSettings(bytes('{"quarantineSeconds":172800}'))).toEqual({ ok: true, value: { quarantineSeconds: 172800 } });
    expect(serializeSettings({ groupBase: 'ff0e::' })).toBe('{"groupBase":"ff0e::"}');
  });

  it.each<[string, (value: Uint8Array) => unknown, string, string]>([
    ['quarantine record', parseDeletedNetwork, '{"owner":"o"}', 'deletedAt must be a string, got nothing'],
    ['quarantine record', parseDeletedNetwork, '{"deletedAt":"yesterday"}', 'deletedAt must be an ISO time, got "yesterday"'],
    ['settings', parseSettings, '{"groupBase":"ff05::1"}', 'groupBase: group base ff05::1 must end in 24 zero bits so that base + VNI is unambiguous'],
    ['settings', parseSettings, '{"groupBase":5}', 'groupBase must be a string, got 5'],
    ['settings', parseSettings, '{"quarantineSeconds":"24h"}', 'quarantineSeconds must be an integer, got "24h"'],
    ['settings', parseSettings, '{"quarantineSeconds":60}', 'quarantineSeconds must be between 3600 (1h) and 31536000 (8760h), got 60'],
    ['status', parseStatus, 'garbage', 'value is not valid JSON: Unexpected token \'g\', "garbage" is not valid JSON'],
    ['status', parseStatus, '[1]', 'value is not a JSON object'],
    ['status', parseStatus, 'null', 'value is not a JSON object'],
    ['status', parseStatus, '{"state":"up"}', 'state must be "ready" or "error", got "up"'],
    ['status', parseStatus, '{"state":"ready","mtu":1430}', 'vxlan must be a string, got nothing'],
    ['status', parseStatus, JSON.stringify({ ...ready, mtu: 1.5 }), 'mtu must be an integer, got 1.5'],
    ['status', parseStatus, JSON.stringify({ ...ready, reason: 7 }), 'reason must be a string, got 7'],
    ['liveness', parseLiveness, JSON.stringify({ ...agent, ready: 'yes' }), 'ready must be a boolean, got "yes"'],
    ['liveness', parseLiveness, JSON.stringify({ ...agent, pid: '42' }), 'pid must be an integer, got "42"'],
    ['liveness', parseLiveness, JSON.stringify({ ...agent, underlayAddress: 5 }), 'underlayAddress must be a string, got 5'],
    ['status', parseStatus, JSON.stringify({ state: 'x'.repeat(50) }), `state must be "ready" or "error", got "${'x'.repeat(39)}…`],
    ['attachment', parseAttachment, '"vm"', 'value is not a JSON object'],
  ])('a %s %s is refused: %s', (_kind, parse, value, reason) => {
    expect(parse(bytes(value))).toEqual({ ok: false, reason });
  });
});
