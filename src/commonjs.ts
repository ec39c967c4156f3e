/**
 * Loads a CommonJS package the way `require` does. An ESM `import` of a
 * CommonJS package first runs Node's cjs-module-lexer over it and over every
 * module it re-exports (etcd3, netlink and cockatiel re-export dozens): about
 * 0.1 s of the agent's start-up on a 2-CPU host, paid again at every restart.
 * Types still come from `import type`.
 */
import { createRequire } from 'node:module';

export const requireCommonJs = createRequire(import.meta.url);
