import { describe, it, expect } from 'vitest';
import { UsageError } from '../src/cli/flags.js';
import { exitCodeFor, formatTable, HELP, parseInvocation, type Invocation } from '../src/cli/vxnetctl.js';
import { nonCanonicalVniReason } from '../src/model/vni.js';
import { ConflictError, NotFoundError, RefusedError } from '../src/store/networks.js';
import { hostnameProblem } from '../src/store/schema.js';

function parse(argv: string[], env: NodeJS.ProcessEnv = {}): Invocation {
  const result = parseInvocation(argv, env);
  if (result.help) throw new Error('unexpected help');
  return result.invocation;
}

function usageError(argv: string[], env: NodeJS.ProcessEnv = {}): string {
  try {
    parseInvocation(argv, env);
  } catch (error) {
    expect(error).toBeInstanceOf(UsageError);
    return (error as Error).message;
  }
  throw new Error(`expected a usage error for ${JSON.stringify(argv)}`);
}

describe('vxnetctl commands', () => {
  it('parses every command with its operands', () => {
    expect(parse(['network', 'create']).command).toEqual({ name: 'network create', force: false });
    expect(parse(['network', 'list']).command).toEqual({ name: 'network list' });
    expect(parse(['network', 'get', 'ff01']).command).toEqual({ name: 'network get', vni: 0xff01 });
    expect(parse(['network', 'delete', '1']).command).toEqual({ name: 'network delete', vni: 1, force: false });
    expect(parse(['network', 'delete', '1', '--force']).command).toEqual({ name: 'network delete', vni: 1, force: true });
    expect(parse(['host', 'attach', 'hv-1.example', 'ffffff']).command).toEqual({ name: 'host attach', host: 'hv-1.example', vni: 0xffffff });
    expect(parse(['host', 'detach', 'hv-1', 'a']).command).toEqual({ name: 'host detach', host: 'hv-1', vni: 10 });
    expect(parse(['status']).command).toEqual({ name: 'status' });
    expect(parse(['status', 'hv-1']).command).toEqual({ name: 'status', host: 'hv-1' });
    expect(parse(['settings', 'get']).command).toEqual({ name: 'settings get' });
    expect(parse(['settings', 'set', '--group-base', 'ff0e:0:0:0:0:0:0:0']).command).toEqual({
      name: 'settings set',
      groupBase: expect.objectContaining({ family: 'inet6', text: 'ff0e::' }),
    });
  });

  it('settings set needs a valid --group-base (validated as vxnetd validates it), a quarantine, or both', () => {
    expect(usageError(['settings', 'set'])).toBe('settings set needs --group-base BASE (e.g. ff05::), --quarantine DURATION (e.g. 24h), or both');
    expect(parse(['settings', 'set', '--quarantine', '48h']).command).toEqual({ name: 'settings set', quarantineSeconds: 172800 });
    expect(parse(['settings', 'set', '--quarantine', '90m', '--group-base', 'ff05::']).command).toEqual({
      name: 'settings set',
      groupBase: expect.objectContaining({ text: 'ff05::' }),
      quarantineSeconds: 5400,
    });
    expect(usageError(['settings', 'set', '--quarantine', '30m'])).toBe('--quarantine must be between 1h and 8760h, got "30m"');
    expect(usageError(['settings', 'set', '--group-base', 'ff05::1'])).toMatch(/^--group-base: .*24 zero bits/);
    expect(usageError(['settings', 'set', '--group-base', '2001:db8::'])).toMatch(/^--group-base: .*not an IPv6 multicast address/);
    expect(usageError(['settings'])).toBe('settings needs a subcommand: get, set');
  });

  it('--force goes with network delete, and with network create only for an explicit --vni', () => {
    expect(parse(['network', 'create', '--vni', 'a', '--force']).command).toEqual({ name: 'network create', vni: 10, force: true });
    expect(usageError(['network', 'create', '--force'])).toBe('--force applies to network create only with --vni (a quarantined VNI)');
    expect(usageError(['network', 'list', '--force'])).toMatch(/--force does not apply to network list/);
    // Only on the command line: an environment cannot force a delete.
    expect(parse(['network', 'delete', '1'], { VXNETD_FORCE: 'true' }).command).toEqual({ name: 'network delete', vni: 1, force: false });
  });

  it('takes a quarantine of 1h … 8760h for one command, on the command line only; without it, the cloud-wide one counts', () => {
    expect(parse(['network', 'create']).quarantineOverrideMs).toBeUndefined();
    expect(parse(['network', 'create', '--quarantine', '2h']).quarantineOverrideMs).toBe(2 * 3_600_000);
    expect(parse(['network', 'delete', '1', '--quarantine', '8760h']).quarantineOverrideMs).toBe(8760 * 3_600_000);
    // A variable left in some environment must not override the cloud-wide quarantine unnoticed.
    expect(parse(['network', 'create'], { VXNETD_QUARANTINE: '1h' }).quarantineOverrideMs).toBeUndefined();
    expect(usageError(['network', 'create', '--quarantine', '59m'])).toBe('--quarantine must be between 1h and 8760h, got "59m"');
    expect(usageError(['network', 'create', '--quarantine', '8761h'])).toMatch(/between 1h and 8760h/);
    expect(usageError(['network', 'list', '--quarantine', '2h'])).toMatch(/--quarantine does not apply to network list/);
  });

  it('parses network create options', () => {
    expect(parse(['network', 'create', '--vni', 'ff01', '--mtu=1400', '--owner', 'customer-42', '--description', 'two words']).command).toEqual({
      name: 'network create',
      vni: 0xff01,
      mtu: 1400,
      owner: 'customer-42',
      description: 'two words',
      force: false,
    });
  });

  it('refuses missing, unknown and surplus words', () => {
    expect(usageError([])).toMatch(/missing command/);
    expect(usageError(['frob'])).toMatch(/unknown command "frob"/);
    expect(usageError(['network'])).toBe('network needs a subcommand: create, list, get, delete');
    expect(usageError(['settings', 'frob'])).toMatch(/unknown command "settings frob"/);
    expect(usageError(['host'])).toBe('host needs a subcommand: attach, detach, remove');
    expect(usageError(['network', 'frob'])).toMatch(/unknown command "network frob"/);
    expect(usageError(['network', 'get'])).toBe('usage: vxnetctl network get HEX');
    expect(usageError(['network', 'get', 'ff01', 'ff02'])).toBe('usage: vxnetctl network get HEX');
    expect(usageError(['network', 'list', 'extra'])).toBe('usage: vxnetctl network list');
    expect(usageError(['host', 'attach', 'hv-1'])).toBe('usage: vxnetctl host attach HOST HEX');
    expect(usageError(['status', 'a', 'b'])).toBe('usage: vxnetctl status [HOST]');
  });

  it('shows help for --help, -h and help, before anything else is checked', () => {
    for (const argv of [['--help'], ['-h'], ['help'], ['network', 'create', '--help'], ['--bogus', '--help']]) {
      expect(parseInvocation(argv, {})).toEqual({ help: true });
    }
    expect(HELP).toContain('VXNETD_ETCD_ENDPOINTS');
    expect(HELP).toContain('VXNETD_GROUP_BASE');
    expect(HELP).toContain('network create [--vni HEX [--force]]');
    expect(HELP).toContain('settings set [--group-base BASE] [--quarantine DURATION]');
    expect(HELP).not.toContain('VXNETD_QUARANTINE');
    expect(HELP).toContain('5 refused');
  });
});

describe('vxnetctl VNIs', () => {
  it.each(['FF01', '0ff01', ' ff01', 'ff01 ', 'g1', '0', '1000000', '', '-1', '0x1'])('refuses non-canonical %j', (text) => {
    expect(usageError(['network', 'get', text])).toBe(nonCanonicalVniReason(text));
    expect(usageError(['network', 'create', '--vni', text])).toBe(`--vni: ${nonCanonicalVniReason(text)}`);
  });

  it('suggests the canonical spelling when there is one', () => {
    expect(usageError(['network', 'get', 'FF01'])).toBe(
      '"FF01" is not a canonical VNI: write it in lowercase hex without leading zeros, 1…ffffff; did you mean ff01?',
    );
    expect(usageError(['host', 'attach', 'hv-1', '00a'])).toMatch(/did you mean a\?$/);
    expect(usageError(['network', 'get', 'g1'])).not.toMatch(/did you mean/);
  });

  it('refuses a --vni whose multicast group is reserved, for the group base in use', () => {
    expect(usageError(['network', 'create', '--vni', '2'])).toBe(
      'VNI 2 maps to multicast group ff05::2, which is reserved (all-routers); choose another VNI',
    );
    expect(usageError(['network', 'create', '--vni', 'fb'])).toMatch(/ff05::fb.*mDNSv6/);
    expect(usageError(['network', 'create', '--vni', '150'])).toMatch(/reserved/);
    expect(parse(['network', 'create', '--vni', '2', '--group-base', '239.0.0.0']).command).toMatchObject({ vni: 2 });
    expect(usageError(['network', 'create', '--vni', 'fffffa', '--group-base', '239.0.0.0'])).toMatch(/239\.255\.255\.250.*SSDP/);
  });

  it('does not check reservations for get, delete and detach, so such networks can still be inspected and removed', () => {
    expect(parse(['network', 'get', '2']).command).toEqual({ name: 'network get', vni: 2 });
    expect(parse(['network', 'delete', 'fb']).command).toEqual({ name: 'network delete', vni: 0xfb, force: false });
  });
});

describe('vxnetctl network create values', () => {
  it.each(['67', '65536', '1.5', 'abc', '-1', ''])('refuses --mtu %j', (mtu) => {
    expect(usageError(['network', 'create', '--mtu', mtu])).toMatch(/^--mtu must/);
  });

  it('accepts the MTU limits', () => {
    expect(parse(['network', 'create', '--mtu', '68']).command).toMatchObject({ mtu: 68 });
    expect(parse(['network', 'create', '--mtu', '65535']).command).toMatchObject({ mtu: 65535 });
  });

  it('refuses an empty owner, which would make every caller with an unset variable share one network', () => {
    expect(usageError(['network', 'create', '--owner', ''])).toBe('--owner must not be empty');
    expect(usageError(['network', 'create', '--owner='])).toBe('--owner must not be empty');
  });

  it('applies the spec limits to owner and description', () => {
    expect(parse(['network', 'create', '--owner', 'o'.repeat(256), '--description', 'd'.repeat(256)]).command).toMatchObject({
      owner: 'o'.repeat(256),
    });
    expect(usageError(['network', 'create', '--owner', 'o'.repeat(257)])).toBe('owner is 257 characters, the limit is 256');
    expect(usageError(['network', 'create', '--description', 'd'.repeat(300)])).toBe('description is 300 characters, the limit is 256');
  });

  it('needs a value after a value flag', () => {
    expect(usageError(['network', 'create', '--owner'])).toBe('flag --owner needs a value');
  });
});

describe('vxnetctl host names', () => {
  // Every command that takes a host refuses, with the schema's one message, a name no agent can have.
  it.each(['a b', '', 'a/b', '/', 'hv\t1', '-hv1', 'hv1.', 'x'.repeat(64)])('refuses %j', (host) => {
    const message = hostnameProblem(host)!;
    expect(message).toBe(
      `host name ${JSON.stringify(host)} is not valid: use letters, digits and inner hyphens, in dot-separated labels of 1…63 characters, at most 253 in all`,
    );
    expect(usageError(['host', 'attach', host, 'ff01'])).toBe(message);
    expect(usageError(['host', 'detach', host, 'ff01'])).toBe(message);
    expect(usageError(['status', host])).toBe(message);
  });
});

describe('vxnetctl flags', () => {
  it('uses the agent defaults and a short etcd deadline', () => {
    const invocation = parse(['network', 'list']);
    expect(invocation.etcd).toEqual({ endpoints: ['http://127.0.0.1:2379'], callTimeoutMs: 3000 });
    expect(invocation.prefix).toBe('/v1');
    expect(invocation.groupBase.text).toBe('ff05::');
    expect(invocation.groupBaseGiven).toBe(false);
    expect(invocation.json).toBe(false);
  });

  it('reads the same VXNETD_* environment as the agent, the command line winning', () => {
    const env = {
      VXNETD_ETCD_ENDPOINTS: 'https://e1:2379, https://e2:2379',
      VXNETD_ETCD_USER: 'ctl',
      VXNETD_ETCD_PASSWORD: 'secret',
      VXNETD_PREFIX: '/test',
      VXNETD_GROUP_BASE: '239.0.0.0',
    };
    const invocation = parse(['network', 'list'], env);
    expect(invocation.etcd).toEqual({
      endpoints: ['https://e1:2379', 'https://e2:2379'],
      user: 'ctl',
      password: 'secret',
      callTimeoutMs: 3000,
    });
    expect(invocation.prefix).toBe('/test');
    expect(invocation.groupBase.text).toBe('239.0.0.0');
    expect(invocation.groupBaseGiven).toBe(true);
    expect(parse(['network', 'list', '--prefix', '/other'], env).prefix).toBe('/other');
  });

  it('accepts --json where it means something, anywhere on the line', () => {
    for (const argv of [
      ['network', 'list', '--json'],
      ['--json', 'network', 'get', '1'],
      ['status', '--json'],
      ['network', 'create', '--json'],
    ]) {
      expect(parse(argv).json).toBe(true);
    }
    expect(parse(['network', 'list', '--json=false']).json).toBe(false);
    expect(parse(['network', 'list'], { VXNETD_JSON: '1' }).json).toBe(true);
    expect(usageError(['network', 'list', '--json=maybe'])).toMatch(/--json must be true or false/);
  });

  it('refuses flags the command does not use, but ignores them in the environment', () => {
    expect(usageError(['network', 'list', '--vni', '3'])).toBe('--vni does not apply to network list (it applies to: network create)');
    expect(usageError(['network', 'delete', '1', '--json'])).toMatch(/--json does not apply to network delete/);
    expect(usageError(['host', 'attach', 'h', '1', '--owner', 'x'])).toMatch(/--owner does not apply/);
    expect(parse(['network', 'list'], { VXNETD_OWNER: 'x', VXNETD_VNI: '3' }).command).toEqual({ name: 'network list' });
  });

  it('refuses unknown flags and bad etcd settings', () => {
    expect(usageError(['network', 'list', '--bogus'])).toBe('unknown flag --bogus (see --help)');
    expect(usageError(['network', 'list', '--etcd-endpoints', 'e1:2379'])).toMatch(/must start with http:\/\/ or https:\/\//);
    expect(usageError(['network', 'list', '--etcd-endpoints', ' , '])).toMatch(/at least one URL/);
    expect(usageError(['network', 'list', '--etcd-cert', 'c.pem'])).toBe('--etcd-cert and --etcd-key go together');
    expect(usageError(['network', 'list', '--prefix', '/v1/'])).toMatch(/--prefix must start with \//);
    expect(usageError(['network', 'list', '--group-base', 'ff05::1'])).toMatch(/^--group-base: .*24 zero bits/);
    expect(usageError(['network', 'list', '--group-base', '10.0.0.0'])).toMatch(/^--group-base: .*not an IPv4 multicast/);
  });
});

describe('vxnetctl exit codes', () => {
  it('maps errors to the documented exit codes', () => {
    expect(exitCodeFor(new UsageError('x'))).toBe(2);
    expect(exitCodeFor(new NotFoundError('x'))).toBe(3);
    expect(exitCodeFor(new RefusedError('x'))).toBe(5);
    expect(exitCodeFor(new ConflictError('x'))).toBe(1);
    expect(exitCodeFor(new Error('x'))).toBe(1);
    expect(exitCodeFor('not even an error')).toBe(1);
  });
});

describe('formatTable', () => {
  it('pads every column but the last to its widest cell', () => {
    expect(
      formatTable([
        ['VNI', 'OWNER', 'DESCRIPTION'],
        ['1', 'customer-42', 'x'],
        ['ff01', '-', 'long text'],
      ]),
    ).toBe(['VNI   OWNER        DESCRIPTION', '1     customer-42  x', 'ff01  -            long text'].join('\n'));
  });
});
