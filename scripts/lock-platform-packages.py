#!/usr/bin/env python3
# npm records optional platform packages only if the registry serves them; the one
# reachable here serves only node-unix-socket-linux-x64-*, and `npm ci` then refuses
# the lock ("Missing: node-unix-socket-darwin-arm64@ from lock file"). This adds the
# missing entries as optional, with their os/cpu, so npm ci validates and skips them.
# Run after `npm install` changes package-lock.json: scripts/lock-platform-packages.py package-lock.json
import json, sys
p = sys.argv[1]
lock = json.load(open(p))
pkgs = lock['packages']
platforms = {
  'darwin-arm64': (['darwin'], ['arm64'], None),
  'darwin-x64': (['darwin'], ['x64'], None),
  'linux-arm-gnueabihf': (['linux'], ['arm'], ['glibc']),
  'linux-arm64-gnu': (['linux'], ['arm64'], ['glibc']),
  'linux-arm64-musl': (['linux'], ['arm64'], ['musl']),
}
out = {}
for key, value in pkgs.items():
  out[key] = value
  if key == 'node_modules/node-unix-socket':
    for suffix, (os_, cpu, libc) in platforms.items():
      name = f'node_modules/node-unix-socket-{suffix}'
      if name in pkgs: continue
      entry = {'version': '0.2.7', 'cpu': cpu, 'license': 'MIT', 'optional': True, 'os': os_}
      if libc: entry['libc'] = libc
      out[name] = entry
lock['packages'] = out
json.dump(lock, open(p, 'w'), indent=2)
open(p, 'a').write('\n')
