/**
 * What the kernel holds per device (a vxlan's flood entries, a bridge's addresses), kept between
 * full rounds so that a reconcile of one object needs no dump of its own: filled from the full
 * round's dump, kept up to date by the agent's own changes and the kernel's notifications, and
 * dropped for a device whenever the kernel disagreed with it. Events lost in a bulk apply or an
 * overflow are followed by a full round, which fills it again.
 */
export class DeviceTable<Entry extends { index: number }> {
  private readonly byDevice = new Map<number, Map<string, Entry>>();

  constructor(private readonly keyOf: (entry: Entry) => string) {}

  /** A full round's dump: these devices have exactly these entries (none listed: none). */
  replaceAll(devices: Iterable<number>, entries: Iterable<Entry>): void {
    this.byDevice.clear();
    for (const index of devices) this.byDevice.set(index, new Map());
    for (const entry of entries) this.byDevice.get(entry.index)?.set(this.keyOf(entry), entry);
  }

  /** The device's entries, or undefined when they are not known. */
  get(index: number): Entry[] | undefined {
    const entries = this.byDevice.get(index);
    return entries && [...entries.values()];
  }

  /** Everything the device holds, as just read. */
  set(index: number, entries: Iterable<Entry>): void {
    this.byDevice.set(index, new Map([...entries].map((entry) => [this.keyOf(entry), entry])));
  }

  /** A notification (or the agent's own change): applied where the device is known. */
  apply(type: 'new' | 'del', entry: Entry, onlyIfAbsent = false): void {
    const entries = this.byDevice.get(entry.index);
    if (!entries) return;
    const key = this.keyOf(entry);
    if (type === 'del') entries.delete(key);
    else if (!onlyIfAbsent || !entries.has(key)) entries.set(key, entry);
  }

  /** The kernel disagreed: the next reconcile of the device reads it. */
  forget(index: number): void {
    this.byDevice.delete(index);
  }
}
