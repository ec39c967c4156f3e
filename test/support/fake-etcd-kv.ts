/**
 * An in-memory etcd KV with revisions, behind the part of etcd3's API that src/store/networks.ts
 * uses: get, getAll().prefix, put, delete, if/and/then/else/commit transactions with
 * Create/Mod/Value comparisons, paged ranges, and raw transactions (kv.txn) whose comparisons may
 * cover a key range and whose failure branch may read a range (keys only, created since a
 * revision). `beforeCommit` lets a test act as a concurrent writer between a command's reads and
 * its commit.
 */
import type { Etcd3, ICompare, IRequestOp } from 'etcd3';

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
  /** Where each paged range read started, and its limit. */
  readonly ranges: Array<{ from: string; limit: number }> = [];

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

  /** etcd's rule for a comparison over a key range: every key in it must hold; an empty range compares as one absent key. */
  private holdsRaw(compare: ICompare): boolean {
    const from = compare.key!.toString();
    const end = compare.range_end?.toString();
    const keys = end === undefined ? [from] : this.keys().filter((key) => key >= from && key < end);
    const column = compare.target as Column;
    const expected = Number(column === 'Create' ? compare.create_revision : compare.mod_revision);
    const holds = (key: string) => {
      const entry = this.entries.get(key);
      const actual = entry ? (column === 'Create' ? entry.createRevision : entry.modRevision) : 0;
      return compare.result === 'Less' ? actual < expected : actual === expected;
    };
    return keys.length === 0 ? holds(from) : keys.every(holds);
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
          fake.ranges.push({ from, limit: Number(request.limit ?? 0) });
          return {
            header: { revision: String(fake.revision) },
            kvs: keys.slice(0, limit).map((key) => fake.kv(key, fake.entries.get(key)!)),
            more: keys.length > limit,
            count: String(keys.length),
          };
        },
        txn: async (request: { compare: ICompare[]; success: IRequestOp[]; failure: IRequestOp[] }) => {
          fake.beforeCommit?.();
          const succeeded = request.compare.every((compare) => fake.holdsRaw(compare));
          const ops = succeeded ? request.success : request.failure;
          const writes = ops.flatMap((op): Op[] =>
            op.request_put
              ? [{ put: op.request_put.key!.toString(), value: op.request_put.value!.toString() }]
              : op.request_delete_range
                ? [{ delete: op.request_delete_range.key!.toString() }]
                : [],
          );
          if (writes.length) {
            fake.apply(writes);
            fake.commits.push(writes);
          }
          const responses = ops.flatMap((op) => {
            const range = op.request_range;
            if (!range) return [];
            const from = range.key!.toString();
            const end = range.range_end!.toString();
            const since = Number(range.min_create_revision ?? 0);
            const keys = fake.keys().filter((key) => key >= from && key < end && fake.entries.get(key)!.createRevision >= since);
            const limit = Number(range.limit ?? 0) || keys.length;
            const kvs = keys.slice(0, limit).map((key) => ({ ...fake.kv(key, fake.entries.get(key)!), ...(range.keys_only ? { value: Buffer.alloc(0) } : {}) }));
            return [{ response_range: { kvs, more: keys.length > limit, count: String(keys.length) } }];
          });
          return { header: { revision: String(fake.revision) }, succeeded, responses };
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
