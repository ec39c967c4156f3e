/** The agent's log stream: info lines batched for a while, warnings at once, in order. */
import { describe, expect, it } from 'vitest';
import { BatchedLog } from '../src/cli/log-stream.js';

function setup() {
  const writes: string[] = [];
  const turns: Array<() => void> = [];
  const stream = new BatchedLog({ write: (text) => writes.push(text) }, (flush) => turns.push(flush));
  const line = (level: number, text: string) => {
    stream.lastLevel = level;
    stream.write(`${text}\n`);
  };
  return { writes, turns, stream, line };
}

describe('BatchedLog', () => {
  it('writes the info lines of one batch together when its time is up', () => {
    const { writes, turns, line } = setup();
    line(30, 'a');
    line(30, 'b');
    line(20, 'c');
    expect(writes).toEqual([]);
    expect(turns).toHaveLength(1);
    turns[0]!();
    expect(writes).toEqual(['a\nb\nc\n']);
    line(30, 'd');
    expect(turns).toHaveLength(2);
    turns[1]!();
    expect(writes).toEqual(['a\nb\nc\n', 'd\n']);
  });

  it('writes a warning or worse at once, after the lines buffered before it', () => {
    const { writes, turns, line } = setup();
    line(30, 'created br1');
    line(40, 'failed: create vxlan1');
    expect(writes).toEqual(['created br1\nfailed: create vxlan1\n']);
    line(60, 'uncaught exception');
    expect(writes).toEqual(['created br1\nfailed: create vxlan1\n', 'uncaught exception\n']);
    turns[0]!();
    expect(writes).toHaveLength(2);
  });

  it('writes at once when more than 64 KiB are buffered', () => {
    const { writes, turns, line } = setup();
    const long = 'x'.repeat(1000);
    for (let i = 0; i < 66; i++) line(30, long);
    expect(writes).toHaveLength(1);
    expect(writes[0]!.length).toBe(66 * 1001);
    line(30, 'next');
    turns[0]!();
    expect(writes).toEqual([writes[0], 'next\n']);
  });

  it('flush() writes what is buffered (at exit) and nothing when empty', () => {
    const { writes, stream, line } = setup();
    stream.flush();
    expect(writes).toEqual([]);
    line(30, 'stopped');
    stream.flush();
    expect(writes).toEqual(['stopped\n']);
  });
});
