/**
 * The bundle hands etcd3 a descriptor made at build time instead of letting it parse
 * rpc.proto at every start (scripts/bundle.mjs). That must be the same gRPC API.
 */
import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a build script in plain JavaScript, without types.
import { ETCD_PROTO_OPTIONS, etcdRpcDescriptor } from '../scripts/etcd-descriptor.mjs';

interface MethodDefinition {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  originalName?: string;
  requestType: { type: unknown };
  responseType: { type: unknown };
  requestSerialize(value: unknown): Buffer;
  requestDeserialize(bytes: Buffer): unknown;
  responseSerialize(value: unknown): Buffer;
  responseDeserialize(bytes: Buffer): unknown;
}
type ServiceDefinition = Record<string, MethodDefinition>;
interface MessageDefinition {
  format: string;
  type: unknown;
}
type PackageDefinition = Record<string, ServiceDefinition | MessageDefinition>;
const isMessage = (definition: ServiceDefinition | MessageDefinition): definition is MessageDefinition => 'format' in definition;
const service = (definitions: PackageDefinition, name: string) => definitions[name] as ServiceDefinition;

const require = createRequire(import.meta.url);
const protoLoader = require(require.resolve('@grpc/proto-loader', { paths: [require.resolve('etcd3')] })) as {
  loadSync(file: string, options: object): PackageDefinition;
  fromJSON(json: object, options: object): PackageDefinition;
};
const RPC_PROTO = require.resolve('etcd3/proto/rpc.proto');

describe("etcd3's descriptor made at build time", () => {
  const atRunTime = protoLoader.loadSync(RPC_PROTO, ETCD_PROTO_OPTIONS);
  const bundled = protoLoader.fromJSON(JSON.parse(JSON.stringify(etcdRpcDescriptor(RPC_PROTO))), ETCD_PROTO_OPTIONS);

  it('has the same services and messages as parsing rpc.proto', () => {
    expect(Object.keys(bundled).sort()).toEqual(Object.keys(atRunTime).sort());
    for (const name of ['etcdserverpb.KV', 'etcdserverpb.Watch', 'etcdserverpb.Lease', 'mvccpb.KeyValue', 'etcdserverpb.RangeRequest']) {
      expect(Object.keys(bundled)).toContain(name);
    }
  });

  it('describes every method and message the same way', () => {
    for (const [name, definition] of Object.entries(atRunTime)) {
      if (isMessage(definition)) {
        expect((bundled[name] as MessageDefinition).type, name).toEqual(definition.type);
        continue;
      }
      const other = service(bundled, name);
      expect(Object.keys(other).sort(), name).toEqual(Object.keys(definition).sort());
      for (const [method, m] of Object.entries(definition)) {
        const o = other[method]!;
        expect({ path: o.path, requestStream: o.requestStream, responseStream: o.responseStream, originalName: o.originalName }, `${name}.${method}`).toEqual({
          path: m.path,
          requestStream: m.requestStream,
          responseStream: m.responseStream,
          originalName: m.originalName,
        });
        expect(o.requestType.type, `${name}.${method} request`).toEqual(m.requestType.type);
        expect(o.responseType.type, `${name}.${method} response`).toEqual(m.responseType.type);
      }
    }
  });

  it('encodes and decodes messages interchangeably (64-bit fields as strings, bytes as buffers)', () => {
    const range = service(atRunTime, 'etcdserverpb.KV').Range!;
    const request = { key: Buffer.from('/v1/networks/'), range_end: Buffer.from('/v1/networks0'), revision: '9007199254740993', limit: '0' };
    const viaBundled = service(bundled, 'etcdserverpb.KV').Range!;
    expect(viaBundled.requestSerialize(request).equals(range.requestSerialize(request))).toBe(true);
    expect(viaBundled.requestDeserialize(range.requestSerialize(request))).toMatchObject({ key: request.key, revision: '9007199254740993' });
    const response = { header: { revision: '42' }, kvs: [{ key: Buffer.from('/v1/networks/64'), value: Buffer.from('{}'), mod_revision: '41' }], count: '1' };
    expect(viaBundled.responseDeserialize(range.responseSerialize(response))).toEqual(range.responseDeserialize(range.responseSerialize(response)));
  });
});
