#!/usr/bin/env node
/**
 * Bundles each compiled program (build/, from tsc) with its JavaScript
 * dependencies into one CommonJS file, dist/cli/NAME.js: the file `bin`, the
 * systemd unit, the tests and the benches run.
 *
 * Why: unbundled, Node resolved, read and compiled ~300 files at every start
 * (`vxnetd --version` 0.45-0.51 s, bundled 0.27-0.37 s on a 2-CPU host;
 * bench/RESULTS.md, 2026-11-30 evening). Nothing more is done for start-up:
 * V8's code cache and a build-time etcd3 descriptor saved 20-60 ms that no
 * target needs (bench/RESULTS.md, 2026-12-02, start-up machinery).
 *
 * - etcd3 reads `${__dirname}/../proto/rpc.proto` when it loads; __dirname is
 *   dist/cli/, so its .proto files are copied to dist/proto/.
 * - The native addons (netlink, node-unix-socket) stay in node_modules.
 * - dist/package.json says "commonjs", the bundles' format, under the
 *   package's "module".
 */
import { chmodSync, cpSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** dist/cli/NAME.js ← build/PATH, one line per bundle. */
const ENTRIES = {
  vxnetd: 'cli/vxnetd.js',
  vxnetctl: 'cli/vxnetctl.js',
  // The netlink request thread's module, loaded by `new Worker()` from beside the programs (src/kernel/request-worker.ts).
  'request-worker-thread': 'kernel/request-worker-thread.js',
};
/** The programs among the entries: executable, with #!. */
const PROGRAMS = ['vxnetd', 'vxnetctl'];

// Nothing left over from an earlier build's layout.
rmSync(join(ROOT, 'dist'), { recursive: true, force: true });
await esbuild.build({
  entryPoints: Object.fromEntries(Object.entries(ENTRIES).map(([name, path]) => [name, join(ROOT, 'build', path)])),
  outdir: join(ROOT, 'dist', 'cli'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['netlink', 'netlink/*', 'node-unix-socket'],
  // The ES modules' import.meta.url becomes the bundle's own URL, so that package.json is found,
  // createRequire() resolves from dist/cli/ and vxnetctl knows it is the entry point.
  define: { 'import.meta.url': '__vxnetdUrl' },
  banner: { js: "const __vxnetdUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});
// bin and the systemd unit run the programs directly (#!/usr/bin/env node).
for (const name of PROGRAMS) chmodSync(join(ROOT, 'dist', 'cli', `${name}.js`), 0o755);
const etcdProto = join(dirname(createRequire(import.meta.url).resolve('etcd3')), '..', 'proto');
cpSync(etcdProto, join(ROOT, 'dist', 'proto'), { recursive: true });
writeFileSync(join(ROOT, 'dist', 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
