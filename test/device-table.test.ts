/** DeviceTable: what the kernel holds per device, between full rounds. */
import { describe, expect, it } from 'vitest';
import { DeviceTable } from '../src/agent/device-table.js';

type Entry = { index: number; key: string; flags?: number };
const table = () => new DeviceTable<Entry>((entry) => entry.key);

describe('DeviceTable', () => {
  it('knows the devices of the last dump, those without entries as empty, and no other', () => {
    const known = table();
    known.replaceAll([1, 2], [{ index: 1, key: 'a' }, { index: 3, key: 'x' }]);
    expect(known.get(1)).toEqual([{ index: 1, key: 'a' }]);
    expect(known.get(2)).toEqual([]);
    expect(known.get(3), 'not a device of interest').toBeUndefined();
  });

  it('follows notifications of known devices only; the agent\'s own add does not undo a newer notification', () => {
    const known = table();
    known.replaceAll([1], []);
    known.apply('new', { index: 1, key: 'a', flags: 0 });
    known.apply('new', { index: 1, key: 'a', flags: 0x40 }, true);
    known.apply('new', { index: 2, key: 'b' });
    expect(known.get(1)).toEqual([{ index: 1, key: 'a', flags: 0 }]);
    expect(known.get(2)).toBeUndefined();
    known.apply('del', { index: 1, key: 'a' });
    expect(known.get(1)).toEqual([]);
  });

  it('forgets a device the kernel disagreed about, until it is read again', () => {
    const known = table();
    known.replaceAll([1], [{ index: 1, key: 'a' }]);
    known.forget(1);
    expect(known.get(1)).toBeUndefined();
    known.set(1, [{ index: 1, key: 'b' }]);
    expect(known.get(1)).toEqual([{ index: 1, key: 'b' }]);
  });
});
