/**
 * Router numbers (EtcdSchema.routerKey): each router of a cloud has one, stable across restarts
 * and unique, and takes `<prefix>::<number>` in every routed network — the first router `::1`.
 */
import type { Etcd3 } from 'etcd3';
import { readPrefix } from './paged-range.js';
import { EtcdSchema, parseRouterClaim, ROUTER_NUMBER_MAX, ROUTER_NUMBER_MIN, serializeRouterClaim } from './schema.js';

/** The number asked for belongs to another router: refusing is the only safe answer (two routers, one address). */
export class RouterNumberTaken extends Error {
  override name = 'RouterNumberTaken';
}

/** Lost races in a row before giving up (each one means another router just took the number tried). */
const CLAIM_ATTEMPTS = 16;

/**
 * This host's router number: the one it already holds; else `wanted` (the operator's
 * --router-number) if nobody holds it; else the lowest free one. Claimed with create-if-absent,
 * so two routers starting at once never get the same number.
 */
export async function claimRouterNumber(client: Etcd3, schema: EtcdSchema, host: string, wanted?: number): Promise<number> {
  for (let attempt = 1; attempt <= CLAIM_ATTEMPTS; attempt++) {
    const holders = new Map<number, string>();
    for (const kv of await readPrefix(client, schema.routersDir)) {
      const parsed = schema.parseKey(kv.key.toString('utf8'));
      const claim = parseRouterClaim(kv.value);
      // A malformed claim still holds its number: it is not ours to reuse.
      if (parsed.kind === 'router') holders.set(parsed.number, claim.ok ? claim.value.host : '(unreadable claim)');
    }
    const held = [...holders].filter(([, holder]) => holder === host).map(([number]) => number);
    if (wanted !== undefined) {
      const holder = holders.get(wanted);
      if (holder === host) return wanted;
      if (holder !== undefined) throw new RouterNumberTaken(`router number ${wanted} belongs to ${holder} (${schema.routerKey(wanted)}); choose another, or remove that router's claim`);
      if (held.length) throw new RouterNumberTaken(`this host already holds router number ${held[0]} (${schema.routerKey(held[0]!)}); a router's number must not change — drop --router-number, or delete that key first`);
    } else if (held.length) {
      return Math.min(...held);
    }
    const number = wanted ?? lowestFree(holders);
    if (number === undefined) throw new RouterNumberTaken(`every router number ${ROUTER_NUMBER_MIN} … ${ROUTER_NUMBER_MAX} is taken`);
    const key = schema.routerKey(number);
    const claimed = await client.if(key, 'Create', '==', 0).then(client.put(key).value(serializeRouterClaim({ host }))).commit();
    if (claimed.succeeded) return number;
  }
  throw new Error(`could not claim a router number: ${CLAIM_ATTEMPTS} races lost in a row`);
}

function lowestFree(holders: Map<number, string>): number | undefined {
  for (let number = ROUTER_NUMBER_MIN; number <= ROUTER_NUMBER_MAX; number++) if (!holders.has(number)) return number;
  return undefined;
}
