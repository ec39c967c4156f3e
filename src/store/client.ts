/** The one place that builds etcd3 clients: endpoints, TLS, auth and gRPC keepalive. */
import { readFileSync } from 'node:fs';
import { noop } from 'cockatiel';
import type * as etcd3 from 'etcd3';
import { Etcd3 } from 'etcd3';
import { MAX_REPLY_BYTES } from './paged-range.js';

export interface EtcdOptions {
  endpoints: string[];
  ca?: string;
  cert?: string;
  key?: string;
  user?: string;
  password?: string;
  /** Per-call deadline; etcd3 has none by default and a frozen server would hang us. */
  callTimeoutMs?: number;
  /** gRPC keepalive ping interval and its answer's deadline (default 2 s each): how soon a frozen etcd is noticed. */
  keepaliveMs?: number;
}

export function createEtcdClient(options: EtcdOptions): etcd3.Etcd3 {
  const keepaliveMs = options.keepaliveMs ?? 2000;
  const config: etcd3.IOptions = {
    hosts: options.endpoints,
    // Without keepalive a frozen (SIGSTOPped) etcd is never noticed.
    grpcOptions: {
      'grpc.keepalive_time_ms': keepaliveMs,
      'grpc.keepalive_timeout_ms': keepaliveMs,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.http2.min_time_between_pings_ms': keepaliveMs,
      'grpc.http2.max_pings_without_data': 0,
      // A page of etcd's largest values, and a watch reply that carries a few, exceed grpc-js's default 4 MiB.
      'grpc.max_receive_message_length': MAX_REPLY_BYTES,
    },
    defaultCallOptions: (context) =>
      context.isStream ? {} : { deadline: new Date(Date.now() + (options.callTimeoutMs ?? 5000)) },
    // Our own loops retry with their own backoff; the library's faults policy would hide outages.
    faultHandling: { global: noop, host: () => noop },
  };
  if (options.ca || options.cert || options.key) {
    config.credentials = {
      rootCertificate: options.ca ? readFileSync(options.ca) : Buffer.alloc(0),
      ...(options.cert ? { certChain: readFileSync(options.cert) } : {}),
      ...(options.key ? { privateKey: readFileSync(options.key) } : {}),
    };
  }
  if (options.user) {
    config.auth = { username: options.user, password: options.password ?? '' };
  }
  return new Etcd3(config);
}
