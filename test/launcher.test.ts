/**
 * The built launchers (scripts/bundle.mjs): they run the bundle with V8's code cache from the
 * build, and without it (another Node rejects it, or it is missing) they still run. Needs
 * `npm run build` first, as `npm test` does.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const cacheVerdict = (launcher: string) => execFileSync(process.execPath, [join(ROOT, 'scripts', 'code-cache.cjs'), 'check', launcher], { encoding: 'utf8' }).trim();

describe('launchers and code cache', () => {
  let copy: string;
  beforeAll(() => {
    if (!existsSync(join(ROOT, 'dist', 'cli', 'vxnetd.bundle.js'))) throw new Error('dist/ is not built: run `npm run build` first');
    // A copy to break: dist/ and package.json beside node_modules, as an installed package has them.
    copy = mkdtempSync(join(tmpdir(), 'vxnetd-launcher-'));
    cpSync(join(ROOT, 'dist'), join(copy, 'dist'), { recursive: true });
    cpSync(join(ROOT, 'package.json'), join(copy, 'package.json'));
    symlinkSync(join(ROOT, 'node_modules'), join(copy, 'node_modules'));
  });
  afterAll(() => rmSync(copy, { recursive: true, force: true }));

  it("ships caches this Node accepts, and the launchers run with them", () => {
    expect(cacheVerdict(join(ROOT, 'dist', 'cli', 'vxnetd.js'))).toBe('accepted');
    expect(cacheVerdict(join(ROOT, 'dist', 'cli', 'vxnetctl.js'))).toBe('accepted');
    expect(execFileSync(process.execPath, [join(ROOT, 'dist', 'cli', 'vxnetd.js'), '--version'], { encoding: 'utf8' })).toBe(`vxnetd ${VERSION}\n`);
    expect(execFileSync(process.execPath, [join(ROOT, 'dist', 'cli', 'vxnetctl.js'), '--help'], { encoding: 'utf8' })).toMatch(/^Usage: vxnetctl/);
  });

  it('runs with a cache V8 rejects, and without one', () => {
    const launcher = join(copy, 'dist', 'cli', 'vxnetd.js');
    const cache = join(copy, 'dist', 'cli', 'vxnetd.bundle.js.cache');
    writeFileSync(cache, Buffer.alloc(4096, 7));
    expect(cacheVerdict(launcher)).toBe('rejected');
    expect(execFileSync(process.execPath, [launcher, '--version'], { encoding: 'utf8' })).toBe(`vxnetd ${VERSION}\n`);
    rmSync(cache);
    expect(cacheVerdict(launcher)).toBe('missing');
    expect(execFileSync(process.execPath, [launcher, '--version'], { encoding: 'utf8' })).toBe(`vxnetd ${VERSION}\n`);
  });
});
