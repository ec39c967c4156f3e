#!/usr/bin/env node
/**
 * Bundles the compiled vxnetd and vxnetctl (build/cli/*.js, from tsc) with
 * their JavaScript dependencies into one CommonJS file each
 * (dist/cli/NAME.bundle.js), and writes beside it V8's code cache for it
 * (NAME.bundle.js.cache) and a launcher, dist/cli/NAME.js: the file `bin`,
 * the systemd unit, the tests and the benches run.
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
 * - The launcher is scripts/launcher.cjs, copied. The code cache (made by
 *   scripts/code-cache.cjs, running `--version` / `--help`) spares V8 parsing and compiling the bundle's start-up code:
 *   ~80 ms of the ~330 ms `vxnetd --version` took. It is only valid for the
 *   Node that made it; another Node rejects it and compiles as usual.
 * - dist/package.json says "commonjs": the launchers and bundles are
 *   CommonJS, because only a vm.Script takes a code cache in Node 20.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, readFileSync, writeFileSync } from 'node:fs';
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

// The netlink request thread's module, loaded by `new Worker()` from beside the bundles (src/kernel/request-worker.ts).
const THREAD_ENTRIES = { 'request-worker-thread': join(ROOT, 'build', 'kernel', 'request-worker-thread.js') };

await esbuild.build({
  entryPoints: { ...Object.fromEntries(ENTRIES.map((name) => [`${name}.bundle`, join(ROOT, 'build', 'cli', `${name}.js`)])), ...THREAD_ENTRIES },
  outdir: join(ROOT, 'dist', 'cli'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  external: ['netlink', 'netlink/*', 'node-unix-socket'],
  // The ES modules' import.meta.url becomes the launcher's own URL: it runs the bundle with its
  // own __filename, so package.json is found, require() resolves and vxnetctl knows it is the entry point.
  define: { 'import.meta.url': '__vxnetdUrl' },
  banner: { js: "const __vxnetdUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [ownModules],
  logLevel: 'warning',
});
writeFileSync(join(ROOT, 'dist', 'package.json'), `${JSON.stringify({ type: 'commonjs' })}\n`);
for (const name of ENTRIES) {
  const bundle = join(ROOT, 'dist', 'cli', `${name}.bundle.js`);
  // The entry's #! line would be a syntax error inside the function Module.wrap() makes.
  writeFileSync(bundle, readFileSync(bundle, 'utf8').replace(/^#!.*\n/, ''));
  const launcher = join(ROOT, 'dist', 'cli', `${name}.js`);
  copyFileSync(join(ROOT, 'scripts', 'launcher.cjs'), launcher);
  chmodSync(launcher, 0o755);
  const codeCache = join(ROOT, 'scripts', 'code-cache.cjs');
  execFileSync(process.execPath, [codeCache, 'write', launcher, name === 'vxnetd' ? '--version' : '--help'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const verdict = execFileSync(process.execPath, [codeCache, 'check', launcher], { encoding: 'utf8' }).trim();
  if (verdict !== 'accepted') throw new Error(`bundle: V8 ${verdict} the code cache just made for ${name}`);
}
