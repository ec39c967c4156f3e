'use strict';
/**
 * V8's code cache for a bundle (scripts/bundle.mjs).
 *
 *   node scripts/code-cache.cjs write BUNDLE ARGS...   runs the bundle with ARGS, then writes BUNDLE.cache
 *   node scripts/code-cache.cjs check BUNDLE           prints accepted, rejected or missing
 *
 * The script is compiled exactly as the launcher compiles it (Module.wrap, the same file name), so
 * a cache this accepts, the launcher's Node accepts too. Written after the run, the cache also
 * holds the functions the run compiled, not only the top level.
 */
const { existsSync, readFileSync, writeFileSync } = require('node:fs');
const { Script } = require('node:vm');
const { wrap } = require('node:module');
const { dirname, join } = require('node:path');

const [mode, bundle, ...args] = process.argv.slice(2);
const cacheFile = `${bundle}.cache`;
const cachedData = mode === 'check' && existsSync(cacheFile) ? readFileSync(cacheFile) : undefined;
const script = new Script(wrap(readFileSync(bundle, 'utf8')), { filename: bundle, cachedData });
if (mode === 'check') {
  process.stdout.write(`${cachedData === undefined ? 'missing' : script.cachedDataRejected ? 'rejected' : 'accepted'}\n`);
} else if (mode === 'write') {
  // As its launcher would run it: beside the bundle, with the given arguments.
  const launcher = join(dirname(bundle), `${require('node:path').basename(bundle, '.bundle.js')}.js`);
  process.argv = [process.argv[0], launcher, ...args];
  process.once('exit', () => writeFileSync(cacheFile, script.createCachedData()));
  const launcherModule = { exports: {} };
  script.runInThisContext().call(launcherModule.exports, launcherModule.exports, require('node:module').createRequire(launcher), launcherModule, launcher, dirname(launcher));
} else {
  process.stderr.write('usage: code-cache.cjs write BUNDLE ARGS... | check BUNDLE\n');
  process.exit(2);
}
