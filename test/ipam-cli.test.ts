/** vxnetctl's IPAM commands as parsed (src/cli/vxnetctl-ipam.ts through vxnetctl's parseInvocation): operands, flags, refusals. */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../src/cli/flags.js';
import { exitCodeFor, HELP, parseInvocation, type Command } from '../src/cli/vxnetctl.js';
import { parsePool, parseSubnet } from '../src/model/ipv6-prefix.js';
import { nonCanonicalVniReason } from '../src/model/vni.js';
import { NotAvailableError } from '../src/store/ipam.js';

function command(argv: string[], env: NodeJS.ProcessEnv = {}): Command {
  const result = parseInvocation(argv, env);
  if (result.help) throw new Error('unexpected help');
  return result.invocation.command;
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

describe('vxnetctl ipam commands', () => {
  it('parses every command with its operands', () => {
    expect(command(['ipam', 'pool', 'set', '2001:db8:100::/48'])).toEqual({ name: 'ipam pool set', pool: parsePool('2001:db8:100::/48') });
    expect(command(['ipam', 'pool', 'get'])).toEqual({ name: 'ipam pool get' });
    expect(command(['ipam', 'create', 'ff01'])).toEqual({ name: 'ipam create', vni: 0xff01, dns: [] });
    expect(command(['ipam', 'get', '1'])).toEqual({ name: 'ipam get', vni: 1 });
    expect(command(['ipam', 'list', '--json'])).toEqual({ name: 'ipam list' });
    expect(command(['ipam', 'delete', 'a'])).toEqual({ name: 'ipam delete', vni: 10 });
    expect(command(['ipam', 'wait', 'a'])).toEqual({ name: 'ipam wait', vni: 10, timeoutMs: 60_000 });
    expect(command(['ipam', 'wait', 'a', '--timeout', '5s'])).toEqual({ name: 'ipam wait', vni: 10, timeoutMs: 5_000 });
    expect(command(['address', 'a', '52:54:00:D6:C2:A9'])).toEqual({ name: 'address', vni: 10, mac: Buffer.from([0x52, 0x54, 0, 0xd6, 0xc2, 0xa9]) });
  });

  it('ipam create takes a /64 and repeated or comma-separated name servers; the command line replaces the environment', () => {
    expect(command(['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100:7::/64', '--dns', '2001:db8::53', '--dns=2001:db8::54'])).toEqual({
      name: 'ipam create',
      vni: 1,
      subnet: parseSubnet('2001:db8:100:7::/64'),
      dns: ['2001:db8::53', '2001:db8::54'],
    });
    expect(command(['ipam', 'create', '1', '--dns', '2001:db8::53, 2001:db8::54'])).toMatchObject({ dns: ['2001:db8::53', '2001:db8::54'] });
    expect(command(['ipam', 'create', '1'], { VXNETD_DNS: 'fd00::53' })).toMatchObject({ dns: ['fd00::53'] });
    expect(command(['ipam', 'create', '1', '--dns', '2001:db8::53'], { VXNETD_DNS: 'fd00::53' })).toMatchObject({ dns: ['2001:db8::53'] });
  });

  it.each<[string[], string | RegExp]>([
    [['ipam'], 'ipam needs a subcommand: pool, create, get, list, delete, wait'],
    [['ipam', 'pool'], 'ipam pool needs a subcommand: set, get'],
    [['ipam', 'pool', 'frob'], 'unknown command "ipam pool frob" (see --help)'],
    [['ipam', 'frob'], 'unknown command "ipam frob" (see --help)'],
    [['ipam', 'pool', 'set'], 'usage: vxnetctl ipam pool set POOL'],
    [['ipam', 'create'], 'usage: vxnetctl ipam create HEX'],
    [['address', '1'], 'usage: vxnetctl address HEX MAC'],
    [['ipam', 'create', 'FF01'], nonCanonicalVniReason('FF01')],
    [['ipam', 'pool', 'set', '10.0.0.0/8'], '"10.0.0.0/8" is not an IPv6 prefix (IPAM is IPv6 only)'],
    [['ipam', 'pool', 'set', '2001:db8:100::/96'], 'pool 2001:db8:100::/96 is longer than /64: it must hold at least one /64 (e.g. 2001:db8:100::/48)'],
    [['ipam', 'pool', 'set', '2001:db8:100::'], /is not an IPv6 prefix: write it as address\/length/],
    [['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100::/48'], '--ipv6-prefix: 2001:db8:100::/48 is not a /64: a network\'s prefix is exactly one /64 (SLAAC needs it)'],
    [['ipam', 'create', '1', '--ipv6-prefix', '2001:db8:100::1/64'], '--ipv6-prefix: "2001:db8:100::1/64" has host bits set; the prefix is 2001:db8:100::/64'],
    [['ipam', 'create', '1', '--dns', '192.0.2.53'], '--dns: name server "192.0.2.53" is not a plain IPv6 address (no prefix length, no zone id)'],
    [['ipam', 'create', '1', '--dns', '2001:db8::1', '--dns', '2001:db8::2', '--dns', '2001:db8::3', '--dns', '2001:db8::4'], '--dns: 4 name servers given; at most 3 (a VM\'s resolver reads no more)'],
    [['ipam', 'get', '1', '--dns', '2001:db8::1'], '--dns does not apply to ipam get (it applies to: ipam create)'],
    [['ipam', 'delete', '1', '--json'], /--json does not apply to ipam delete/],
    [['ipam', 'delete', '1', '--force'], /--force does not apply to ipam delete/],
    [['ipam', 'wait', '1', '--timeout', '0.5s'], '--timeout must be between 1s and 24h, got "0.5s"'],
    [['ipam', 'get', '1', '--timeout', '5s'], '--timeout does not apply to ipam get (it applies to: ipam wait)'],
    [['address', '1', '52:54:00:d6:c2'], /"52:54:00:d6:c2" is not a MAC address/],
    [['address', '1', '01:00:5e:00:00:01'], /is a multicast \(group\) MAC address/],
  ])('refuses %j', (argv, message) => {
    expect(usageError(argv)).toMatch(typeof message === 'string' ? new RegExp(`^${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) : message);
  });

  it('--prefix stays the etcd key prefix for the IPAM commands', () => {
    const result = parseInvocation(['ipam', 'list', '--prefix', '/test1'], {});
    expect(!result.help && result.invocation.prefix).toBe('/test1');
  });

  it('documents the commands, the flags and exit status 6', () => {
    for (const text of ['ipam pool set POOL', 'ipam create HEX [--ipv6-prefix P/64] [--dns ADDR]...', 'ipam wait HEX [--timeout D]', 'address HEX MAC', '--ipv6-prefix VALUE', 'VXNETD_DNS', '6 ipam wait timed out']) {
      expect(HELP).toContain(text);
    }
    expect(exitCodeFor(new NotAvailableError('x'))).toBe(6);
  });
});
