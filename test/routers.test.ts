/** Router numbers (src/store/routers.ts) against the in-memory etcd: stable, unique, and an operator's choice checked. */
import type { Etcd3 } from 'etcd3';
import { describe, expect, it } from 'vitest';
import { claimRouterNumber, RouterNumberTaken } from '../src/store/routers.js';
import { EtcdSchema } from '../src/store/schema.js';
import { FakeEtcdKv } from './support/fake-etcd-kv.js';

const schema = new EtcdSchema('/v1');
const claim = (kv: FakeEtcdKv, host: string, wanted?: number) => claimRouterNumber(kv.client() as unknown as Etcd3, schema, host, wanted);

describe('claimRouterNumber', () => {
  it('gives the lowest free number once, and the same one at every later start', async () => {
    const kv = new FakeEtcdKv();
    kv.put('/v1/routers/2', '{"host":"r9"}');
    expect(await claim(kv, 'r1')).toBe(1);
    expect(await claim(kv, 'r3')).toBe(3);
    expect(await claim(kv, 'r1')).toBe(1);
    expect(kv.get('/v1/routers/3')).toBe('{"host":"r3"}');
  });

  it("refuses a --router-number another router holds, and a new one for a router that has one; a malformed claim still holds its number", async () => {
    const kv = new FakeEtcdKv();
    kv.put('/v1/routers/1', '{"host":"r1"}');
    kv.put('/v1/routers/2', 'not json');
    await expect(claim(kv, 'r2', 1)).rejects.toThrow(new RouterNumberTaken('router number 1 belongs to r1 (/v1/routers/1); choose another, or remove that router\'s claim'));
    await expect(claim(kv, 'r2', 2)).rejects.toBeInstanceOf(RouterNumberTaken);
    expect(await claim(kv, 'r2')).toBe(3);
    await expect(claim(kv, 'r2', 7)).rejects.toThrow(/already holds router number 3/);
    expect(await claim(kv, 'r1', 1)).toBe(1);
  });

  it('a number taken by another router between the read and the claim is not shared: the next one is taken', async () => {
    const kv = new FakeEtcdKv();
    let raced = false;
    kv.beforeCommit = () => {
      if (!raced) kv.put('/v1/routers/1', '{"host":"other"}');
      raced = true;
    };
    expect(await claim(kv, 'r1')).toBe(2);
  });
});
