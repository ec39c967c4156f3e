// CPU profile of a benchmarked agent, written when it exits (SIGTERM → process.exit):
//
//   VXNETD_BENCH_NODE_OPTIONS="--import $PWD/bench/profile-hook.mjs" npx tsx bench/converge.ts …
//
// (`--cpu-prof` is not allowed in NODE_OPTIONS.) Profiles land in
// /tmp/vxnetd-profiles/agent-<pid>.cpuprofile; open them in Chrome DevTools
// (Performance → Load profile) or speedscope. Note: native work done from
// libuv poll callbacks — e.g. rtnetlink requests the netlink binding sends
// when its socket becomes writable, which run the kernel's side synchronously
// — is shown as "(idle)", not as JavaScript.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const dir = '/tmp/vxnetd-profiles';
const session = new Session();
session.connect();
session.post('Profiler.enable');
session.post('Profiler.setSamplingInterval', { interval: 200 });
session.post('Profiler.start');
process.on('exit', () => {
  // The in-thread inspector session answers synchronously, so this works in 'exit'.
  session.post('Profiler.stop', (error, result) => {
    if (error) return;
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/agent-${process.pid}.cpuprofile`, JSON.stringify(result.profile));
  });
});
