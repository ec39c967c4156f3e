/**
 * An in-memory etcd KV with revisions, behind the part of etcd3's builder API that
 * src/store/networks.ts uses: get, getAll().prefix, put, delete, and if/and/then/else/commit
 * transactions with Create/Mod/Value comparisons. `beforeCommit` lets a test act as a
 * concurrent writer between a command's reads and its commit.
 */
import type { Etcd3 } from 'etcd3';

interface Entry {
  value: string;
  createRevision: number;
  modRevision: number;
}

type Op = { put: string; value: string } | { delete: string };
type Column = 'Create' | 'Mod' | 'Value';

export class FakeEtcdKv {
  revision = 1;
  readonly entries = new Map<string, Entry>();
  /** Every committed transaction's operations, in order. */
  readonly commits: Op[][] = [];
  /** Runs once before each commit is judged (a concurrent writer). */
  beforeCommit?: () => void;

  /** Writes a key as another client would: its own revision. */
  put(key: string, value: string): void {
    this.apply([{ put: key, value }]);
  }

  delete(key: string): void {
    this.apply([{ delete: key }]);
  }

  get(key: string): string | undefined {
    return this.entries.get(key)?.value;
  }

  keys(prefix = ''): string[] {
    return [...this.entries.keys()].filter((key) => key.startsWith(prefix)).sort();
  }

  private kv(key: string, entry: Entry) {
    return {
      key: Buffer.from(key),
      value: Buffer.from(entry.value),
      create_revision: String(entry.createRevision),
      mod_revision: String(entry.modRevision),
    };
  }

  private apply(ops: Op[]): void {
    this.revision++;
    for (const op of ops) {
      if ('put' in op) {
        const existing = this.entries.get(op.put);
        this.entries.set(op.put, { value: op.value, createRevision: existing?.createRevision ?? this.revision, modRevision: this.revision });
      } else {
        this.entries.delete(op.delete);
      }
    }
  }

  private holds(key: string, column: Column, expected: string | number): boolean {
    const entry = this.entries.get(key);
    if (column === 'Value') return entry !== undefined && entry.value === String(expected);
    const actual = entry ? (column === 'Create' ? entry.createRevision : entry.modRevision) : 0;
    return actual === Number(expected);
  }

  client(): Etcd3 {
    const fake = this;
    const range = (keys: () => string[]) => ({
      exec: async () => ({ header: { revision: String(fake.revision) }, kvs: keys().map((key) => fake.kv(key, fake.entries.get(key)!)) }),
    });
    const client = {
      get: (key: string) => ({
        ...range(() => (fake.entries.has(key) ? [key] : [])),
        buffer: async () => (fake.entries.has(key) ? Buffer.from(fake.entries.get(key)!.value) : null),
      }),
      getAll: () => ({ prefix: (prefix: string) => range(() => fake.keys(prefix)) }),
      // The paged reads (src/store/paged-range.ts): a key range with a limit, at the current revision.
      kv: {
        range: async (request: { key: Buffer; range_end: Buffer; limit?: number | string }) => {
          const from = request.key.toString();
          const end = request.range_end.toString();
          const keys = [...fake.entries.keys()].filter((key) => key >= from && key < end).sort();
          const limit = Number(request.limit ?? 0) || keys.length;
          return {
            header: { revision: String(fake.revision) },
            kvs: keys.slice(0, limit).map((key) => fake.kv(key, fake.entries.get(key)!)),
            more: keys.length > limit,
            count: String(keys.length),
          };
        },
      },
      put: (key: string) => ({ value: (value: string): Op => ({ put: key, value }) }),
      delete: () => ({
        key: (key: string) => Object.assign({ delete: key } as Op, {
          exec: async () => {
            const existed = fake.entries.has(key);
            if (existed) fake.apply([{ delete: key }]);
            return { deleted: existed ? '1' : '0' };
          },
        }),
      }),
      if: (key: string, column: Column, _op: '==', expected: string | number) => {
        const comparisons: Array<[string, Column, string | number]> = [[key, column, expected]];
        let success: Op[] = [];
        let failure: Op[] = [];
        const builder = {
          and: (k: string, c: Column, _o: '==', e: string | number) => {
            comparisons.push([k, c, e]);
            return builder;
          },
          then: (...ops: Op[]) => {
            success = ops;
            return builder;
          },
          else: (...ops: Op[]) => {
            failure = ops;
            return builder;
          },
          commit: async () => {
            fake.beforeCommit?.();
            const succeeded = comparisons.every(([k, c, e]) => fake.holds(k, c, e));
            const ops = (succeeded ? success : failure).map((op): Op => ('put' in op ? { put: op.put, value: op.value } : { delete: op.delete }));
            if (ops.length) {
              fake.apply(ops);
              fake.commits.push(ops);
            }
            return { succeeded, responses: [] };
          },
        };
        return builder;
      },
    };
    return client as unknown as Etcd3;
  }
}
