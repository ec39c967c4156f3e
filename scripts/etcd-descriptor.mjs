/**
 * etcd3's gRPC descriptor as JSON, made the way @grpc/proto-loader's loadSync()
 * makes it at run time (same parser, same files), so that the bundle can hand it
 * to `fromJSON()` instead of parsing .proto text at every start (scripts/bundle.mjs).
 */
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** The options etcd3 passes to loadSync(); only keepCase changes what the parser makes. */
export const ETCD_PROTO_OPTIONS = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

export function etcdRpcDescriptor(protoFile) {
  // The loader of the proto-loader etcd3 itself resolves, so the bundle cannot drift from what etcd3 would have loaded.
  const protoLoader = require.resolve('@grpc/proto-loader', { paths: [protoFile] });
  const { loadProtosWithOptionsSync } = require(protoLoader.replace(/index\.js$/, 'util.js'));
  return loadProtosWithOptionsSync(protoFile, ETCD_PROTO_OPTIONS).toJSON();
}
