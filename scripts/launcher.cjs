#!/usr/bin/env node
'use strict';
/**
 * Copied by scripts/bundle.mjs to dist/cli/NAME.js: runs NAME.bundle.js beside it with V8's code
 * cache from the build (NAME.bundle.js.cache, ~70 ms of start-up). A cache this Node rejects, or a
 * missing one, only costs that time: V8 compiles as usual. scripts/code-cache.cjs makes and
 * checks the cache through compileBundle(), so it compiles exactly as a run does.
 */
const { readFileSync } = require('node:fs');
const { Script } = require('node:vm');
const { wrap } = require('node:module');
const { dirname } = require('node:path');

/** The bundle beside `launcher`, compiled with its code cache unless told not to. */
function compileBundle(launcher, useCache = true) {
  const bundle = launcher.replace(/\.js$/, '.bundle.js');
  let cachedData;
  if (useCache) {
    try {
      cachedData = readFileSync(`${bundle}.cache`);
    } catch {}
  }
  const script = new Script(wrap(readFileSync(bundle, 'utf8')), { filename: bundle, cachedData });
  return { bundle, script, cache: cachedData === undefined ? 'missing' : script.cachedDataRejected ? 'rejected' : 'accepted' };
}

/** Runs the bundle as the launcher's own code: its __filename, module and require. */
function runBundle(script, launcherModule, launcherRequire) {
  const { filename } = launcherModule;
  script.runInThisContext().call(launcherModule.exports, launcherModule.exports, launcherRequire, launcherModule, filename, dirname(filename));
}

module.exports = { compileBundle, runBundle };
if (require.main === module) runBundle(compileBundle(__filename).script, module, require);
