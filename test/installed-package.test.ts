/**
 * The programs as a package installs them: only the files package.json lists, beside
 * node_modules. The bundles must find what they read at start: package.json, etcd3's .proto
 * files (dist/proto/, scripts/bundle.mjs) and the native addons. Needs `npm run build` first, as `npm test` does.
 */
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const PACKAGE = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string; files: string[] };

describe('the installed package', () => {
  let installed: string;
  beforeAll(() => {
    if (!existsSync(join(ROOT, 'dist', 'cli', 'vxnetd.js'))) throw new Error('dist/ is not built: run `npm run build` first');
    installed = mkdtempSync(join(tmpdir(), 'vxnetd-installed-'));
    for (const path of ['package.json', ...PACKAGE.files]) {
      mkdirSync(dirname(join(installed, path)), { recursive: true });
      cpSync(join(ROOT, path), join(installed, path), { recursive: true });
    }
    symlinkSync(join(ROOT, 'node_modules'), join(installed, 'node_modules'));
  });
  afterAll(() => rmSync(installed, { recursive: true, force: true }));

  it('runs vxnetd, which loads etcd3 and its .proto files at start', () => {
    expect(execFileSync(join(installed, 'dist', 'cli', 'vxnetd.js'), ['--version'], { encoding: 'utf8' })).toBe(`vxnetd ${PACKAGE.version}\n`);
  });

  it('runs vxnetctl', () => {
    expect(execFileSync(join(installed, 'dist', 'cli', 'vxnetctl.js'), ['--help'], { encoding: 'utf8' })).toMatch(/^Usage: vxnetctl/);
  });
});
