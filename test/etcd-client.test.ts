/** The etcd client options built from flags, and the choice of member: no etcd, fake clients. */
import { createRequire } from 'node:module';
import type * as etcd3 from 'etcd3';
import { describe, expect, it } from 'vitest';
import { callOptionsFor, DEFAULT_KEEPALIVE_MS, EndpointRotation, etcdClientConfig, openEtcdClient, type EtcdOptions } from '../src/store/client.js';

const { GRPCUnavailableError, EtcdPermissionDeniedError } = createRequire(import.meta.url)('etcd3') as typeof etcd3;

const files: Record<string, Buffer> = { '/etc/vxnetd/ca.pem': Buffer.from('CA'), '/etc/vxnetd/hv.pem': Buffer.from('CERT'), '/etc/vxnetd/hv-key.pem': Buffer.from('KEY') };
const readFile = (path: string) => {
  const content = files[path];
  if (!content) throw new Error(`ENOENT ${path}`);
  return content;
};

describe('etcd client options', () => {
  it("pings no more often than etcd's default --grpc-keepalive-min-time (5 s) allows", () => {
    const { grpcOptions } = etcdClientConfig({ endpoints: ['http://e1:2379'] }, readFile);
    expect(DEFAULT_KEEPALIVE_MS).toBeGreaterThanOrEqual(5000);
    expect(grpcOptions!['grpc.keepalive_time_ms']).toBe(DEFAULT_KEEPALIVE_MS);
    expect(grpcOptions!['grpc.keepalive_timeout_ms']).toBe(2000);
    // A ping on a connection without streams counts against the client as well.
    expect(grpcOptions!['grpc.keepalive_permit_without_calls']).toBe(0);
  });

  it('keeps short keepalives possible for tests that start etcd with a shorter minimum', () => {
    const { grpcOptions } = etcdClientConfig({ endpoints: ['http://e1:2379'], keepaliveMs: 500 }, readFile);
    expect(grpcOptions!['grpc.keepalive_time_ms']).toBe(500);
    expect(grpcOptions!['grpc.keepalive_timeout_ms']).toBe(500);
  });

  it('with a client certificate but no --etcd-ca, leaves the root certificates to Node (its default trusted CAs), not an empty list', () => {
    const { credentials } = etcdClientConfig({ endpoints: ['https://e1:2379'], cert: '/etc/vxnetd/hv.pem', key: '/etc/vxnetd/hv-key.pem' }, readFile);
    // grpc-js passes a null root to tls.createSecureContext() as no `ca`: Node's default roots.
    expect(credentials).toEqual({ rootCertificate: null, certChain: Buffer.from('CERT'), privateKey: Buffer.from('KEY') });
  });

  it("asks for etcd's require-leader flag on every stream (watches, lease keepalives), and gives every unary call a deadline", async () => {
    const config = etcdClientConfig({ endpoints: ['http://e1:2379'], callTimeoutMs: 3000 }, readFile);
    const factory = config.defaultCallOptions as (context: { service: string; method: string; isStream: boolean }) => ReturnType<typeof callOptionsFor>;
    for (const [service, method] of [['Watch', 'watch'], ['Lease', 'leaseKeepAlive']]) {
      const options = factory({ service: service!, method: method!, isStream: true });
      expect(options.deadline).toBeUndefined();
      // What grpc-js adds to the call's metadata: etcd's rpctypes.MetadataRequireLeaderKey = MetadataHasLeader.
      const metadata = await options.credentials!.generateMetadata({ service_url: 'http://e1:2379/etcdserverpb.Watch', method_name: method! });
      expect(metadata.getMap()).toEqual({ hasleader: 'true' });
    }
    const unary = callOptionsFor({ isStream: false }, 3000, () => 1_000);
    expect(unary).toEqual({ deadline: new Date(4_000) });
    expect(factory({ service: 'KV', method: 'range', isStream: false }).credentials).toBeUndefined();
  });

  it('with --etcd-ca, trusts that CA only', () => {
    const { credentials } = etcdClientConfig(
      { endpoints: ['https://e1:2379'], ca: '/etc/vxnetd/ca.pem', cert: '/etc/vxnetd/hv.pem', key: '/etc/vxnetd/hv-key.pem' },
      readFile,
    );
    expect(credentials).toEqual({ rootCertificate: Buffer.from('CA'), certChain: Buffer.from('CERT'), privateKey: Buffer.from('KEY') });
    expect(etcdClientConfig({ endpoints: ['https://e1:2379'] }, readFile).credentials).toBeUndefined();
  });
});

describe('EndpointRotation', () => {
  const members = ['http://e1:2379', 'http://e2:2379', 'http://e3:2379'];

  it('starts at a random member and goes round from there', () => {
    const rotation = new EndpointRotation(members, () => 0.5);
    const seen = [rotation.current];
    for (let i = 0; i < 3; i++) {
      rotation.advance();
      seen.push(rotation.current);
    }
    expect(seen).toEqual(['http://e2:2379', 'http://e3:2379', 'http://e1:2379', 'http://e2:2379']);
    expect(new EndpointRotation(members, () => 0.9999).current).toBe('http://e3:2379');
    expect(rotation.options({ endpoints: members, user: 'u' })).toEqual({ endpoints: ['http://e2:2379'], user: 'u' });
  });
});

describe('openEtcdClient', () => {
  /** Fake clients whose probe read fails with the member's error, if it has one. */
  function fakeCluster(errors: Record<string, Error>) {
    const built: string[] = [];
    const closed: string[] = [];
    const create = (options: EtcdOptions) => {
      const [endpoint] = options.endpoints as [string];
      built.push(endpoint);
      return {
        endpoint,
        get: () => ({
          exec: async () => {
            if (errors[endpoint]) throw errors[endpoint];
            return { kvs: [] };
          },
        }),
        close: () => void closed.push(endpoint),
      } as unknown as etcd3.Etcd3;
    };
    return { built, closed, create };
  }
  const members = ['http://e1:2379', 'http://e2:2379', 'http://e3:2379'];
  const first = () => 0;

  it('skips members that cannot be reached, closing their clients', async () => {
    const cluster = fakeCluster({ 'http://e1:2379': new GRPCUnavailableError('connect ECONNREFUSED'), 'http://e2:2379': new GRPCUnavailableError('connect ECONNREFUSED') });
    const client = await openEtcdClient({ endpoints: members }, '/v1/settings', cluster.create, first);
    expect((client as unknown as { endpoint: string }).endpoint).toBe('http://e3:2379');
    expect(cluster.closed).toEqual(['http://e1:2379', 'http://e2:2379']);
  });

  it('fails with the last error when no member answers, and at once for an error every member would give', async () => {
    const down = new GRPCUnavailableError('connect ECONNREFUSED e3');
    const allDown = fakeCluster(Object.fromEntries(members.map((member) => [member, member === 'http://e3:2379' ? down : new GRPCUnavailableError('x')])));
    await expect(openEtcdClient({ endpoints: members }, '/v1/settings', allDown.create, first)).rejects.toBe(down);
    expect(allDown.closed).toEqual(members);

    const denied = fakeCluster({ 'http://e1:2379': new EtcdPermissionDeniedError('permission denied') });
    await expect(openEtcdClient({ endpoints: members }, '/v1/settings', denied.create, first)).rejects.toThrow('permission denied');
    expect(denied.built).toEqual(['http://e1:2379']);
  });

  it('builds a single endpoint client without a probe', async () => {
    const cluster = fakeCluster({ 'http://e1:2379': new GRPCUnavailableError('down') });
    await openEtcdClient({ endpoints: ['http://e1:2379'] }, '/v1/settings', cluster.create);
    expect(cluster.built).toEqual(['http://e1:2379']);
    expect(cluster.closed).toEqual([]);
  });
});
