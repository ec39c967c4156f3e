/**
 * Runs inside a host namespace for native-tests/kernel.test.ts: exits the process while many
 * requests are in flight on the request worker's netlink socket. Ending a thread with an open
 * netlink socket aborts the process (SIGABRT) about one time in two unless the socket is closed
 * first; the test expects exit code 0 every time.
 */
import { NetlinkKernel } from '../../src/kernel/rtnl.js';

const kernel = new NetlinkKernel();
await kernel.getLink('lo');
for (let i = 0; i < 200; i++) kernel.getLink('lo').catch(() => undefined);
// One turn later the requests have crossed to the worker, which is sending them.
setImmediate(() => setTimeout(() => process.exit(0), 1));
