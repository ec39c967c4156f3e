/** The one place that builds etcd3 clients: endpoints, TLS, auth and gRPC keepalive. */
import { readFileSync } from 'node:fs';
import { credentials as grpcCredentials, Metadata, type CallOptions } from '@grpc/grpc-js';
import { noop } from 'cockatiel';
import type * as etcd3 from 'etcd3';
import { Etcd3, GRPCDeadlineExceededError, GRPCUnavailableError } from 'etcd3';
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
  /** gRPC keepalive ping interval (default DEFAULT_KEEPALIVE_MS): how soon a frozen etcd is noticed. */
  keepaliveMs?: number;
  /** How long a ping may go unanswered (default: the interval, at most DEFAULT_KEEPALIVE_TIMEOUT_MS). */
  keepaliveTimeoutMs?: number;
}

/**
 * etcd answers a client that pings more often than its --grpc-keepalive-min-time (5 s by default)
 * with GOAWAY too_many_pings, and drops the connection. grpc-js sends the next ping this long after
 * the previous one was answered, so pings reach etcd more than 5 s apart. Tests that freeze etcd
 * pass shorter ones (and start etcd with a shorter minimum).
 */
export const DEFAULT_KEEPALIVE_MS = 5000;
/** With the interval, a frozen etcd is noticed within about 7 s (as before, an unanswered ping is given 2 s). */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 2000;

/**
 * etcd's require-leader flag (the metadata clientv3.WithRequireLeader sends), on every stream. A
 * member cut off from its cluster keeps a watch open and sends nothing, for ever: with the flag,
 * it ends the stream ("no leader") after three election timeouts without a leader, so the agent
 * notices and lists again from another member. (Not on unary calls: during an ordinary election
 * they would fail at once instead of waiting for the new leader.)
 */
const REQUIRE_LEADER = grpcCredentials.createFromMetadataGenerator((_call, callback) => {
  const metadata = new Metadata();
  metadata.set('hasleader', 'true');
  callback(null, metadata);
});

/** How long an etcd call may take unless EtcdOptions.callTimeoutMs says otherwise. */
export const DEFAULT_CALL_TIMEOUT_MS = 5000;

/** gRPC options of each etcd3 call: a deadline for unary calls, the require-leader flag for streams. */
export function callOptionsFor(context: { isStream: boolean }, callTimeoutMs = DEFAULT_CALL_TIMEOUT_MS, now: () => number = Date.now): CallOptions {
  return context.isStream ? { credentials: REQUIRE_LEADER } : { deadline: new Date(now() + callTimeoutMs) };
}

/** True when etcd could not be reached or did not answer within the call deadline. */
export function isEtcdUnreachable(error: unknown): boolean {
  return error instanceof GRPCUnavailableError || isEtcdTimeout(error);
}

/** True when etcd accepted the connection (or never answered) but did not reply within the call deadline. */
export function isEtcdTimeout(error: unknown): boolean {
  return error instanceof GRPCDeadlineExceededError;
}

/** etcd3's options for `options` (pure but for reading the TLS files through `readFile`). */
export function etcdClientConfig(options: EtcdOptions, readFile: (path: string) => Buffer = readFileSync): etcd3.IOptions {
  const keepaliveMs = options.keepaliveMs ?? DEFAULT_KEEPALIVE_MS;
  const config: etcd3.IOptions = {
    hosts: options.endpoints,
    // Without keepalive a frozen (SIGSTOPped) etcd is never noticed.
    grpcOptions: {
      'grpc.keepalive_time_ms': keepaliveMs,
      'grpc.keepalive_timeout_ms': options.keepaliveTimeoutMs ?? Math.min(keepaliveMs, DEFAULT_KEEPALIVE_TIMEOUT_MS),
      // Only while a call is open (the watch, whenever the agent is connected). etcd counts a ping
      // on a connection without streams as abuse (grpc-go, PermitWithoutStream off) and answers the
      // third with GOAWAY too_many_pings; and grpc-js keeps a connection open for 10-20 s after its
      // last client closed it, as it does for the member an agent just moved away from.
      'grpc.keepalive_permit_without_calls': 0,
      'grpc.http2.min_time_between_pings_ms': keepaliveMs,
      'grpc.http2.max_pings_without_data': 0,
      // A page of etcd's largest values, and a watch reply that carries a few, exceed grpc-js's default 4 MiB.
      'grpc.max_receive_message_length': MAX_REPLY_BYTES,
    },
    defaultCallOptions: (context) => callOptionsFor(context, options.callTimeoutMs),
    // Our own loops retry with their own backoff; the library's faults policy would hide outages.
    faultHandling: { global: noop, host: () => noop },
  };
  if (options.ca || options.cert || options.key) {
    config.credentials = {
      // Without --etcd-ca, null: grpc-js then builds the TLS context without `ca`, so etcd's
      // certificate is checked against Node's default trusted CAs (its bundled Mozilla list plus
      // NODE_EXTRA_CA_CERTS), as for an https:// endpoint with no TLS flag. An empty buffer here
      // would trust no CA at all and fail every handshake.
      rootCertificate: (options.ca ? readFile(options.ca) : null) as Buffer,
      ...(options.cert ? { certChain: readFile(options.cert) } : {}),
      ...(options.key ? { privateKey: readFile(options.key) } : {}),
    };
  }
  if (options.user) {
    config.auth = { username: options.user, password: options.password ?? '' };
  }
  return config;
}

export function createEtcdClient(options: EtcdOptions): etcd3.Etcd3 {
  return new Etcd3(etcdClientConfig(options));
}

/**
 * The endpoints of a cluster in the order clients are built on them: from a random one (so the
 * agents of a cloud spread over the members), one after the other.
 *
 * Why one endpoint per client: etcd3 1.1.2 picks a member at random for every call and, with our
 * fault handling off, fails the call when that member is down instead of trying another (the
 * pool tries the next member only when a circuit breaker refused the call). A pass of the agent
 * makes half a dozen calls and two streams, so with one member of three dead almost every pass
 * failed somewhere, and the backoff grew to its cap: more than 20 s without applying anything.
 * A client on one member either works or fails at once, and the next one is built on the next.
 */
export class EndpointRotation {
  private index: number;

  constructor(
    private readonly endpoints: readonly string[],
    random: () => number = Math.random,
  ) {
    if (endpoints.length === 0) throw new RangeError('no etcd endpoints');
    this.index = Math.floor(random() * endpoints.length) % endpoints.length;
  }

  get current(): string {
    return this.endpoints[this.index]!;
  }

  get size(): number {
    return this.endpoints.length;
  }

  /** Moves to the next endpoint: the current one failed (or its connection broke). */
  advance(): void {
    this.index = (this.index + 1) % this.endpoints.length;
  }

  /** Options for a client on the current endpoint only. */
  options(options: EtcdOptions): EtcdOptions {
    return { ...options, endpoints: [this.current] };
  }
}

/**
 * A client on a member that answers: each endpoint in turn (from a random one) until a
 * linearizable read of `probeKey` succeeds, which also proves the member is part of a quorum.
 * For one-shot commands (vxnetctl), where a dead member must not fail the command.
 */
export async function openEtcdClient(
  options: EtcdOptions,
  probeKey: string,
  create: (options: EtcdOptions) => etcd3.Etcd3 = createEtcdClient,
  random: () => number = Math.random,
): Promise<etcd3.Etcd3> {
  if (options.endpoints.length === 1) return create(options);
  const rotation = new EndpointRotation(options.endpoints, random);
  let lastError: unknown;
  for (let tried = 0; tried < options.endpoints.length; tried++, rotation.advance()) {
    const client = create(rotation.options(options));
    try {
      await client.get(probeKey).exec();
      return client;
    } catch (error) {
      client.close();
      // Refused for another reason (auth, permissions): every member would say the same.
      if (!isEtcdUnreachable(error)) throw error;
      lastError = error;
    }
  }
  throw lastError;
}
