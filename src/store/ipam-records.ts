/**
 * Reading one network's IPAM entry together with its index key, and deleting both in a caller's
 * transaction: shared by `ipam delete` (store/ipam.ts) and `network delete` (store/networks.ts),
 * which must never leave an IPAM entry, or a /64 held, for a network that is gone.
 */
import type { Etcd3, IKeyValue } from 'etcd3';
import { parseSubnet } from '../model/ipv6-prefix.js';
import { parseIpamEntry, parseIpamIndex, type EtcdSchema, type IpamEntry, type Parsed } from './schema.js';

export interface StoredIpam {
  kv: IKeyValue;
  entry: Parsed<IpamEntry>;
  /** The index key of the entry's /64, when it names this network (one naming another is not ours to delete). */
  index?: IKeyValue;
}

export async function readStoredIpam(client: Etcd3, schema: EtcdSchema, vni: number): Promise<StoredIpam | undefined> {
  const kv = (await client.get(schema.ipamKey(vni)).exec()).kvs[0];
  if (!kv) return undefined;
  const entry = parseIpamEntry(kv.value);
  if (!entry.ok) return { kv, entry };
  const index = (await client.get(schema.ipamPrefixKey(parseSubnet(entry.value.prefix))).exec()).kvs[0];
  return { kv, entry, ...(index && parseIpamIndex(index.value) === vni ? { index } : {}) };
}

type Transaction = ReturnType<Etcd3['if']>;
export type TxnWrite = ReturnType<Etcd3['put']> | ReturnType<Etcd3['delete']>;

/**
 * Makes `transaction` hold only if the network's IPAM is still as read (absent, or the same entry
 * and index), and, when `remove`, delete both with it.
 */
export function addIpamGuard(
  client: Etcd3,
  schema: EtcdSchema,
  transaction: Transaction,
  writes: TxnWrite[],
  vni: number,
  stored: StoredIpam | undefined,
  remove: boolean,
): void {
  transaction.and(schema.ipamKey(vni), 'Mod', '==', stored?.kv.mod_revision ?? 0);
  if (!stored || !remove) return;
  writes.push(client.delete().key(schema.ipamKey(vni)));
  if (stored.index) {
    const indexKey = stored.index.key.toString();
    transaction.and(indexKey, 'Mod', '==', stored.index.mod_revision);
    writes.push(client.delete().key(indexKey));
  }
}
