/**
 * Runs inside a host namespace for native-tests/kernel.test.ts: overflows NetlinkKernel's link-event
 * socket again and again, then prints one JSON object: how many overflows were reported, how many
 * of this process's netlink sockets are then subscribed to RTNLGRP_LINK (/proc/self/net/netlink),
 * and whether a link change is still heard. Device names start with `ko`; the test owns the namespace.
 *
 * The overflow must happen while the binding is reading the socket: its next recvmsg() then fails
 * with ENOBUFS, which the binding reports as an 'error' and leaves the socket open. An overflow
 * that the event loop's poll sees instead (POLLERR) aborts the process inside the binding (it
 * builds its error with a null syscall name), whatever the JavaScript does. So each round creates
 * one trigger device, and the handler of its event (inside the binding's read) blocks on `ip`
 * creating many more.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type { LinkEvent } from '../../src/kernel/rtnl.js';
import { NetlinkKernel } from '../../src/kernel/rtnl.js';

const ROUNDS = Number(process.argv[2]);
const BRIDGES_PER_ROUND = 64;
const NETLINK_ROUTE = 0;
const RTNLGRP_LINK_BIT = 1 << 0;

const kernel = new NetlinkKernel({}, { eventReceiveBufferBytes: 16 * 1024 });
let overflows = 0;
// As the agent does, no events while it resyncs.
kernel.events.on('overflow', () => {
  overflows++;
  kernel.pauseEvents();
});
const heard = new Set<string>();
kernel.events.on('link', (event: LinkEvent) => {
  heard.add(event.link.name);
  const trigger = /^ko(\d+)-trigger$/.exec(event.link.name);
  if (!trigger || event.type !== 'new') return;
  const batch = Array.from({ length: BRIDGES_PER_ROUND }, (_, i) => `link add name ko${trigger[1]}-${i} type bridge\n`).join('');
  spawnSync('ip', ['-batch', '-'], { input: batch });
});
kernel.subscribe();

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
async function until(condition: () => boolean): Promise<void> {
  for (let wait = 0; !condition() && wait < 250; wait++) await sleep(20);
}

for (let round = 0; round < ROUNDS; round++) {
  const before = overflows;
  kernel.resumeEvents();
  await kernel.createLink({ name: `ko${round}-trigger`, kind: 'bridge', up: false }, `create ko${round}-trigger`);
  await until(() => overflows > before);
}
kernel.resumeEvents();

/** This process's rtnetlink sockets as the kernel lists them; the library binds port (counter << 22) | pid. */
function routeSockets(): Array<{ groups: number }> {
  return readFileSync('/proc/self/net/netlink', 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter(([, protocol, port]) => Number(protocol) === NETLINK_ROUTE && (Number(port) & 0x3fffff) === process.pid)
    .map(([, , , groups]) => ({ groups: parseInt(groups!, 16) }));
}
const subscribed = routeSockets().filter((socket) => socket.groups & RTNLGRP_LINK_BIT).length;

// Still listening: a change made now is heard.
await kernel.createLink({ name: 'ko-after', kind: 'bridge', up: false }, 'create ko-after');
await until(() => heard.has('ko-after'));
await kernel.close();

process.stdout.write(`${JSON.stringify({ overflows, subscribed, heardAfter: heard.has('ko-after') })}\n`);
