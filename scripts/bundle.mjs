#!/usr/bin/env node
/**
 * Bundles each compiled program (build/, from tsc) with its JavaScript
 * dependencies into one CommonJS file, dist/cli/NAME.js: the file `bin`, the
 * systemd unit, the tests and the benches run.
 *
 * Why: unbundled, Node resolved, read and compiled ~300 files at every start
 * (`vxnetd --version` 0.45-0.51 s, bundled 0.27-0.37 s on a 2-CPU host;
 * bench/RESULTS.md, 2026-11-30 evening). V8's code cache on top of that saved
 * ~30 ms that no target needs (bench/RESULTS.md, 2026-12-02, start-up machinery).
 *
 * - etcd3 parses `proto/rpc.proto` at load; here that call is replaced by
 *   @grpc/proto-loader's `fromJSON()` of a descriptor made from the same
 *   files at build time (scripts/etcd-descriptor.mjs; unit-tested to give the
 *   same services and messages). If etcd3 ever loads it differently the
 *   build fails instead of shipping an unpatched call that cannot find its
 *   file.
 * - The native addons (netlink, node-unix-socket) stay in node_modules.
 * - dist/package.json says "commonjs", the bundles' format, under the
 *   package's "module".
 */
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { etcdRpcDescriptor } from './etcd-descriptor.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** dist/cli/NAME.js ← build/PATH, one line per bundle. */
const ENTRIES = {
  vxnetd: 'cli/vxnetd.js',
  vxnetctl: 'cli/vxnetctl.js',
};
const ETCD_PROTO_LOAD = '(0, proto_loader_1.loadSync)(`${__dirname}/../proto/rpc.proto`, {';

/** Replaces `count` occurrences exactly, or fails the build saying which assumption broke. */
function replaceExactly(text, search, replacement, expected, what) {
  const found = typeof search === 'string' ? text.split(search).length - 1 : (text.match(search) ?? []).length;
  if (found !== expected) throw new Error(`bundle: expected ${expected} of ${what}, found ${found}: update scripts/bundle.mjs`);
  return text.replace(search, replacement);
}

const ownModules = {
  name: 'vxnetd-modules',
  setup(build) {
    build.onLoad({ filter: /[\\/]node_modules[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, ({ path }) => {
      const text = readFileSync(path, 'utf8');
      const descriptor = JSON.stringify(etcdRpcDescriptor(join(dirname(path), '..', 'proto', 'rpc.proto')));
      return { contents: replaceExactly(text, ETCD_PROTO_LOAD, `(0, proto_loader_1.fromJSON)(${descriptor}, {`, 1, "etcd3's rpc.proto load"), loader: 'js' };
    });
  },
};

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
  plugins: [ownModules],
  logLevel: 'warning',
});
// bin and the systemd unit run the programs directly (#!/usr/bin/env node).
for (const name of Object.keys(ENTRIES)) chmodSync(join(ROOT, 'dist', 'cli', `${name}.js`), 0o755);
writeFileSync(join(ROOT, 'dist', 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
