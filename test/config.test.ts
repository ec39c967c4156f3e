import { describe, expect, it } from 'vitest';
import { loggableConfig, parseAgentConfig } from '../src/cli/config.js';
import { UsageError } from '../src/cli/flags.js';
import { parseListen } from '../src/agent/http.js';

const run = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
  const result = parseAgentConfig(argv, env);
  if (result.kind !== 'run') throw new Error(result.kind);
  return result.config;
};

describe('vxnetd configuration', () => {
  it('defaults follow DESIGN.md', () => {
    const config = run(['--underlay', 'eth0', '--hostname', 'hv1']);
    expect(config).toMatchObject({
      etcd: { endpoints: ['http://127.0.0.1:2379'] },
      prefix: '/v1',
      underlay: 'eth0',
      scope: 'all',
      metricsListen: '[::]:9730',
      logLevel: 'info',
      resyncIntervalMs: 60_000,
      ttl: 5,
      dstport: 4789,
      flood: 'multicast',
    });
    expect(config.groupBase.text).toBe('ff05::');
    expect(run(['--underlay', 'eth0', '--flood', 'unicast']).flood).toBe('unicast');
  });

  it('every flag has an environment variable; the command line wins', () => {
    const config = run(['--ttl=7'], {
      VXNETD_UNDERLAY: 'u0',
      VXNETD_HOSTNAME: 'hv9',
      VXNETD_ETCD_ENDPOINTS: 'http://[fd00::1]:2379, https://etcd2:2379',
      VXNETD_TTL: '9',
      VXNETD_SCOPE: 'attached',
      VXNETD_RESYNC_INTERVAL: '1500ms',
      VXNETD_ETCD_USER: 'agent',
      VXNETD_ETCD_PASSWORD: 'secret',
    });
    expect(config).toMatchObject({ underlay: 'u0', hostname: 'hv9', ttl: 7, scope: 'attached', resyncIntervalMs: 1500 });
    expect(config.etcd).toEqual({ endpoints: ['http://[fd00::1]:2379', 'https://etcd2:2379'], user: 'agent', password: 'secret' });
    const logged = JSON.stringify(loggableConfig(config));
    expect(logged).not.toContain('secret');
    expect(loggableConfig(config)).toMatchObject({ hostname: 'hv9', groupBase: 'ff05::', etcd: { user: 'agent', password: '[redacted]' } });
    expect(loggableConfig(run(['--underlay', 'u0', '--local', '2001:db8::5']))).toMatchObject({ groupBase: 'ff05::', local: '2001:db8::5' });
    expect(loggableConfig(run(['--underlay', 'u0'])).etcd).toMatchObject({ password: undefined });
  });

  it('--local becomes the network-order bytes of the group base\'s family', () => {
    expect(run(['--underlay', 'u0', '--local', '2001:db8::5']).local).toEqual(Buffer.from('20010db8000000000000000000000005', 'hex'));
    expect(run(['--underlay', 'u0', '--group-base', '239.0.0.0', '--local', '192.0.2.1']).local).toEqual(Buffer.from([192, 0, 2, 1]));
    expect(run(['--underlay', 'u0']).local).toBeUndefined();
  });

  it.each([
    [[], /--underlay is required/],
    [['--underlay', 'u0', '--scope', 'some'], /--scope must be "all" or "attached"/],
    [['--underlay', 'u0', '--flood', 'broadcast'], /--flood must be "multicast" or "unicast", got "broadcast"/],
    [['--underlay', 'u0', '--ttl', '0'], /--ttl must be between 1 and 255/],
    [['--underlay', 'u0', '--dstport', 'x'], /--dstport must be a whole number/],
    [['--underlay', 'u0', '--group-base', '2001:db8::'], /--group-base: .*not an IPv6 multicast address/],
    [['--underlay', 'u0', '--local', '10.0.0.1'], /--local "10.0.0.1" is not an IPv6 address/],
    [['--underlay', 'u0', '--local', '2001:db8::5/64'], /--local "2001:db8::5\/64" is not an IPv6 address/],
    [['--underlay', 'u0', '--group-base', '239.0.0.0', '--local', '2001:db8::5'], /--local "2001:db8::5" is not an IPv4 address \(the group base is IPv4\)/],
    [['--underlay', 'u0', '--etcd-endpoints', 'etcd:2379'], /must start with http/],
    [['--underlay', 'u0', '--prefix', 'v1/'], /--prefix must start with \//],
    [['--underlay', 'u0', '--bogus'], /unknown flag --bogus/],
    [['--underlay', 'u0', '--resync-interval', 'soon'], /duration/],
    [['--underlay', 'u0', '--resync-interval', '1000h'], /--resync-interval must be between 1s and 24h, got "1000h"/],
    [['--underlay', 'u0', '--resync-interval', '1ms'], /--resync-interval must be between 1s and 24h, got "1ms"/],
    [['--underlay', 'u0', '--take-over', 'hv1'], /--take-over "hv1" is not an identity/],
    [['--underlay', 'a/b'], /not a valid interface name/],
    [['--underlay', 'u0', '--hostname', 'a/b'], /^--hostname: host name "a\/b" is not valid: use letters, digits and inner hyphens/],
    [['--underlay', 'u0', '--hostname', 'a b'], /^--hostname: host name "a b" is not valid/],
  ])('%j is refused with a clear message', (argv, message) => {
    expect(() => parseAgentConfig(argv as string[], {})).toThrow(UsageError);
    expect(() => parseAgentConfig(argv as string[], {})).toThrow(message as RegExp);
  });

  it('--help and --version', () => {
    expect(parseAgentConfig(['--help'], {}).kind).toBe('help');
    expect(parseAgentConfig(['--version'], {}).kind).toBe('version');
  });

  it.each([
    ['[::]:9730', '::', 9730],
    ['127.0.0.1:9100', '127.0.0.1', 9100],
    ['[fd00::1]:80', 'fd00::1', 80],
  ])('listen address %s', (text, host, port) => {
    expect(parseListen(text)).toEqual({ host, port });
  });

  it('bad listen address', () => {
    expect(() => parseListen('9730')).toThrow(/--metrics-listen/);
  });
});
