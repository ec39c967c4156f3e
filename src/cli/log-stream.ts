/**
 * pino's output for the agent: info lines are collected for up to 10 ms and go out in one
 * write, because a bulk apply logs thousands of lines and a write(2) each was a visible share of
 * the agent's CPU (bench/RESULTS.md, "log lines"). A warning or worse is written at once, behind
 * the lines buffered before it (they explain it); more than 64 KiB buffered is written at once
 * too; the owner flushes at exit. Only a hard crash (abort) loses lines: those of its last 10 ms.
 */

/** pino sets lastLevel on a stream that carries this symbol, before each write. */
const PINO_METADATA = Symbol.for('pino.metadata');
const WARN = 40;
const FLUSH_AFTER_MS = 10;
const FLUSH_ABOVE_CHARS = 64 * 1024;

export interface LogSink {
  write(text: string): unknown;
}

export class BatchedLog {
  readonly [PINO_METADATA] = true;
  /** The level of the line being written, set by pino. */
  lastLevel = 0;
  private buffered: string[] = [];
  private bufferedChars = 0;
  private scheduled = false;

  constructor(
    private readonly sink: LogSink,
    private readonly later: (flush: () => void) => void = (flush) => void setTimeout(flush, FLUSH_AFTER_MS).unref(),
  ) {}

  write(line: string): void {
    this.buffered.push(line);
    this.bufferedChars += line.length;
    if (this.lastLevel >= WARN || this.bufferedChars > FLUSH_ABOVE_CHARS) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    this.later(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  flush(): void {
    if (this.buffered.length === 0) return;
    const text = this.buffered.length === 1 ? this.buffered[0]! : this.buffered.join('');
    this.buffered = [];
    this.bufferedChars = 0;
    this.sink.write(text);
  }
}
