#!/usr/bin/env node
/**
 * Bundles the compiled vxnetd and vxnetctl (build/cli/*.js, from tsc) with
 * their JavaScript dependencies into one file each: dist/cli/vxnetd.js and
 * dist/cli/vxnetctl.js, the files `bin`, the systemd unit, the tests and the
 * benches run.
 *
 * Why: an agent that restarts over running VMs should be converging, not
 * loading modules. Unbundled, Node resolved, read and compiled ~300 files
 * (grpc-js alone ~80 ms) and etcd3 parsed its .proto text at load: the first
 * log line came 0.31-0.37 s after spawn on a 2-CPU host, 0.23-0.31 s bundled
 * (bench/RESULTS.md, 2026-11-30 evening).
 *
 * - `requireCommonJs('pkg')` (src/commonjs.ts) becomes `require('pkg')` so
 *   that the package is bundled.
 * - etcd3 parses `proto/rpc.proto` at load; here that call is replaced by
 *   @grpc/proto-loader's `fromJSON()` of a descriptor made from the same
 *   files at build time (scripts/etcd-descriptor.mjs; unit-tested to give the
 *   same services and messages). If etcd3 ever loads it differently the
 *   build fails instead of shipping an unpatched call that cannot find its
 *   file.
 * - The native addons (netlink, node-unix-socket) stay in node_modules.
 */
import { chmodSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { etcdRpcDescriptor } from './etcd-descriptor.mjs';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const ENTRIES = ['vxnetd', 'vxnetctl'];
const ETCD_PROTO_LOAD = '(0, proto_loader_1.loadSync)(`${__dirname}/../proto/rpc.proto`, {';
const REQUIRE_COMMON_JS = /\brequireCommonJs\((['"][^'"]+['"])\)/g;

/** Replaces `count` occurrences exactly, or fails the build saying which assumption broke. */
function replaceExactly(text, search, replacement, expected, what) {
  const found = typeof search === 'string' ? text.split(search).length - 1 : (text.match(search) ?? []).length;
  if (found !== expected) throw new Error(`bundle: expected ${expected} of ${what}, found ${found}: update scripts/bundle.mjs`);
  return text.replace(search, replacement);
}

const ownModules = {
  name: 'vxnetd-modules',
  setup(build) {
    build.onLoad({ filter: /[\\/]build[\\/].*\.js$/ }, ({ path }) => {
      const text = readFileSync(path, 'utf8');
      const calls = (text.match(/\brequireCommonJs\(/g) ?? []).length;
      if (calls === 0) return { contents: text, loader: 'js' };
      return { contents: replaceExactly(text, REQUIRE_COMMON_JS, 'require($1)', calls, `requireCommonJs('literal') calls in ${path}`), loader: 'js' };
    });
    build.onLoad({ filter: /[\\/]node_modules[\\/]etcd3[\\/]lib[\\/]connection-pool\.js$/ }, ({ path }) => {
      const text = readFileSync(path, 'utf8');
      const descriptor = JSON.stringify(etcdRpcDescriptor(join(dirname(path), '..', 'proto', 'rpc.proto')));
      return { contents: replaceExactly(text, ETCD_PROTO_LOAD, `(0, proto_loader_1.fromJSON)(${descriptor}, {`, 1, "etcd3's rpc.proto load"), loader: 'js' };
    });
  },
};

await esbuild.build({
  entryPoints: Object.fromEntries(ENTRIES.map((name) => [name, join(ROOT, 'build', 'cli', `${name}.js`)])),
  outdir: join(ROOT, 'dist', 'cli'),
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // Shared chunks would put files beside the entries that `bin` does not name.
  splitting: false,
  external: ['netlink', 'netlink/*', 'node-unix-socket'],
  // Bundled CommonJS code calls require() for built-ins and the native addons.
  banner: { js: "import { createRequire as __vxnetdCreateRequire } from 'node:module'; const require = __vxnetdCreateRequire(import.meta.url);" },
  plugins: [ownModules],
  logLevel: 'warning',
});
for (const name of ENTRIES) chmodSync(join(ROOT, 'dist', 'cli', `${name}.js`), 0o755);
