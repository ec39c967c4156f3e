/**
 * Every read of a whole directory goes through here, in pages: one un-paged range over a prefix
 * fails for good once its reply passes the client's receive limit (a few values of etcd's largest
 * size, or ~25,000 networks, at grpc-js's default 4 MiB). A page is a range with a limit that goes
 * on after the last key returned, and every page after the first asks for the revision the first
 * one saw, so that the pages, and the directories read together, form one snapshot.
 */
import { EtcdPermissionDeniedError, GRPCInvalidArgumentError, GRPCResourceExhastedError, type Etcd3, type IKeyValue } from 'etcd3';

/** etcd's --max-request-bytes default: no put, hence no stored key and value together, is larger. */
export const ETCD_MAX_REQUEST_BYTES = 1.5 * 1024 * 1024;
/** etcd's --max-txn-ops default. */
export const ETCD_MAX_TXN_OPS = 128;
/**
 * Keys of the first page. Pages grow (doubling, up to RANGE_PAGE_KEYS_MAX) while their replies
 * stay small, and shrink to about RANGE_PAGE_BYTES when values are large: etcd counts every
 * remaining key of the range for each page, so small pages make a long list quadratic (50,000
 * networks: 5.6 s in pages of 64, 0.6 s in pages of 1,024, measured on loopback).
 */
export const RANGE_PAGE_KEYS = 256;
export const RANGE_PAGE_KEYS_MAX = 1024;
export const RANGE_PAGE_BYTES = 16 * 1024 * 1024;
/**
 * The client's receive limit (grpc.max_receive_message_length), above RANGE_PAGE_BYTES and any
 * single value: a page that still exceeds it (large values right after many small ones) is read
 * again with half the keys. grpc-js only allocates what arrives, so the limit costs nothing.
 */
export const MAX_REPLY_BYTES = 128 * 1024 * 1024;

/** A list that meets a compaction of its revision starts again; this bounds how often in a row. */
const MAX_LIST_ATTEMPTS = 5;

export interface PrefixesSnapshot {
  revision: number;
  /** The key-values under each prefix, in the order of the prefixes, each sorted by key. */
  kvs: IKeyValue[][];
}

/**
 * The key-values under each prefix, all at one revision: the first page read fixes it. When etcd
 * compacts that revision before the last page is read, the whole list starts again at a new one.
 */
export async function readPrefixes(client: Etcd3, prefixes: readonly string[], pageKeys = RANGE_PAGE_KEYS): Promise<PrefixesSnapshot> {
  for (let attempt = 1; ; attempt++) {
    try {
      const [first, ...others] = prefixes;
      const head = await pagesOf(client, first!, undefined, pageKeys);
      const rest = await Promise.all(others.map((prefix) => pagesOf(client, prefix, head.revision, pageKeys)));
      return { revision: head.revision, kvs: [head.kvs, ...rest.map((read) => read.kvs)] };
    } catch (error) {
      if (!isCompacted(error) || attempt >= MAX_LIST_ATTEMPTS) throw error;
    }
  }
}

/**
 * The key-values under each prefix at a revision read before (a watch's, say): a compaction of it
 * is the caller's to handle (list again). A few prefixes at a time, so that hundreds of small reads
 * do not all wait on one connection at once.
 */
export async function readPrefixesAt(client: Etcd3, prefixes: readonly string[], revision: number, pageKeys = RANGE_PAGE_KEYS): Promise<IKeyValue[][]> {
  const kvs: IKeyValue[][] = [];
  for (let from = 0; from < prefixes.length; from += PREFIXES_AT_ONCE) {
    const reads = prefixes.slice(from, from + PREFIXES_AT_ONCE).map((prefix) => pagesOf(client, prefix, revision, pageKeys));
    for (const read of await Promise.all(reads)) kvs.push(read.kvs);
  }
  return kvs;
}

const PREFIXES_AT_ONCE = 16;

/** Single keys at a revision read before (those that exist), a few at a time. */
export async function readKeysAt(client: Etcd3, keys: readonly string[], revision: number): Promise<IKeyValue[]> {
  const found: IKeyValue[] = [];
  for (let from = 0; from < keys.length; from += PREFIXES_AT_ONCE) {
    const reads = keys.slice(from, from + PREFIXES_AT_ONCE).map((key) => client.kv.range({ key: Buffer.from(key), revision }));
    for (const reply of await Promise.all(reads)) found.push(...reply.kvs);
  }
  return found;
}

/** The key-values under one prefix, sorted by key, at one revision. */
export async function readPrefix(client: Etcd3, prefix: string): Promise<IKeyValue[]> {
  return (await readPrefixAt(client, prefix)).kvs;
}

/** The key-values under one prefix, sorted by key, and the revision they were read at. */
export async function readPrefixAt(client: Etcd3, prefix: string): Promise<{ revision: number; kvs: IKeyValue[] }> {
  const { revision, kvs } = await readPrefixes(client, [prefix]);
  return { revision, kvs: kvs[0]! };
}

async function pagesOf(client: Etcd3, prefix: string, atRevision: number | undefined, pageKeys: number): Promise<{ revision: number; kvs: IKeyValue[] }> {
  const rangeEnd = prefixEnd(Buffer.from(prefix));
  const kvs: IKeyValue[] = [];
  let from = Buffer.from(prefix);
  let revision = atRevision;
  let limit = pageKeys;
  for (;;) {
    let page: Awaited<ReturnType<Etcd3['kv']['range']>>;
    try {
      page = await client.kv.range({ key: from, range_end: rangeEnd, limit, ...(revision === undefined ? {} : { revision }) });
    } catch (error) {
      // Only an etcd allowed larger values than its default makes a page this large: fewer keys per page from here on.
      if (!isMessageTooLarge(error) || limit === 1) throw error;
      limit = Math.ceil(limit / 2);
      continue;
    }
    revision ??= Number(page.header.revision);
    kvs.push(...page.kvs);
    limit = nextPageKeys(limit, page.kvs);
    const last = page.kvs.at(-1);
    if (!page.more || !last) return { revision, kvs };
    // The smallest key after the last one returned.
    from = Buffer.concat([last.key, Buffer.from([0])]);
  }
}

function nextPageKeys(limit: number, page: IKeyValue[]): number {
  const bytes = page.reduce((sum, kv) => sum + kv.key.length + kv.value.length, 0);
  if (bytes > RANGE_PAGE_BYTES) return Math.max(1, Math.floor((limit * RANGE_PAGE_BYTES) / bytes));
  return bytes * 2 <= RANGE_PAGE_BYTES ? Math.min(RANGE_PAGE_KEYS_MAX, limit * 2) : limit;
}

/** The end of the range of keys that start with `prefix` (etcd's range_end: the prefix plus one). */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  // A prefix of only 0xff bytes: every key from it on.
  return Buffer.from([0]);
}

/** etcd no longer has the revision asked for. */
export function isCompacted(error: unknown): boolean {
  return error instanceof Error && error.message.includes('required revision has been compacted');
}

/**
 * etcd (or the client) refused the request itself — too large, too many operations, not allowed —
 * so sending it again unchanged fails again. Anything else (unreachable, no leader, out of space,
 * too many requests) may pass later.
 */
export function isRequestRefused(error: unknown): boolean {
  return (
    error instanceof GRPCInvalidArgumentError ||
    error instanceof EtcdPermissionDeniedError ||
    isMessageTooLarge(error)
  );
}

/** A message over gRPC's size limit, at whichever end received it: a request etcd refused, or a reply the client did. */
function isMessageTooLarge(error: unknown): boolean {
  return error instanceof GRPCResourceExhastedError && /larger than max/i.test(error.message);
}
