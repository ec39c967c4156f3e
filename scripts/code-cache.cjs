'use strict';
/**
 * V8's code cache for a launcher's bundle (scripts/bundle.mjs, scripts/launcher.cjs).
 *
 *   node scripts/code-cache.cjs write LAUNCHER ARGS...   runs the bundle as LAUNCHER ARGS would, then writes its cache
 *   node scripts/code-cache.cjs check LAUNCHER           prints accepted, rejected or missing
 *
 * The bundle is compiled by the launcher's own compileBundle(), so a cache this accepts, a run
 * accepts too. Written after the run, the cache also holds the functions the run compiled, not
 * only the top level.
 */
const { writeFileSync } = require('node:fs');
const Module = require('node:module');
const { resolve } = require('node:path');

const [mode, launcherArg, ...args] = process.argv.slice(2);
if ((mode !== 'write' && mode !== 'check') || !launcherArg) {
  process.stderr.write('usage: code-cache.cjs write LAUNCHER ARGS... | check LAUNCHER\n');
  process.exit(2);
}
const launcher = resolve(launcherArg);
const { compileBundle, runBundle } = require(launcher);
if (mode === 'check') {
  process.stdout.write(`${compileBundle(launcher).cache}\n`);
} else {
  const { bundle, script } = compileBundle(launcher, false);
  process.argv = [process.argv[0], launcher, ...args];
  process.once('exit', () => writeFileSync(`${bundle}.cache`, script.createCachedData()));
  const launcherModule = new Module(launcher);
  launcherModule.filename = launcher;
  runBundle(script, launcherModule, Module.createRequire(launcher));
}
