/** etcd's JSON gateway (/v3/kv/*), for tests that must read or write around every client library. */

export interface RawKey {
  key: string;
  value: string;
  modRevision: number;
}

export function base64(text: string): string {
  return Buffer.from(text).toString('base64');
}

/** Every key under `prefix` and the store's revision. */
export async function readRaw(etcdUrl: string, prefix: string): Promise<{ revision: number; keys: RawKey[] }> {
  const end = Buffer.from(prefix);
  end[end.length - 1]!++;
  const response = await fetch(`${etcdUrl}/v3/kv/range`, { method: 'POST', body: JSON.stringify({ key: base64(prefix), range_end: end.toString('base64') }) });
  const body = (await response.json()) as { header: { revision: string }; kvs?: Array<{ key: string; value: string; mod_revision: string }> };
  const text = (encoded: string) => Buffer.from(encoded, 'base64').toString();
  return {
    revision: Number(body.header.revision),
    keys: (body.kvs ?? []).map((kv) => ({ key: text(kv.key), value: text(kv.value), modRevision: Number(kv.mod_revision) })),
  };
}
