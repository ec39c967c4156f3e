/**
 * pino's output for the agent: the lines of one event-loop turn go out in one write. A burst
 * of 1,000 new networks logs ~3,000 lines, and one write(2) per line cost ~0.2 s of the agent's
 * CPU, plus a wake-up of journald for each. A warning or worse is written at once, behind the
 * lines buffered before it, and the owner flushes at exit: the lines before an error are the
 * ones that explain it. Only a hard crash (abort) loses lines, those of its own turn.
 */

/** pino sets lastLevel on a stream that carries this symbol, before each write. */
const PINO_METADATA = Symbol.for('pino.metadata');
const WARN = 40;

export interface LogSink {
  write(text: string): unknown;
}

export class TurnBufferedLog {
  readonly [PINO_METADATA] = true;
  /** The level of the line being written, set by pino. */
  lastLevel = 0;
  private buffered: string[] = [];
  private scheduled = false;

  constructor(
    private readonly sink: LogSink,
    private readonly nextTurn: (flush: () => void) => void = (flush) => void setImmediate(flush),
  ) {}

  write(line: string): void {
    this.buffered.push(line);
    if (this.lastLevel >= WARN) return this.flush();
    if (this.scheduled) return;
    this.scheduled = true;
    this.nextTurn(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  flush(): void {
    if (this.buffered.length === 0) return;
    const text = this.buffered.length === 1 ? this.buffered[0]! : this.buffered.join('');
    this.buffered = [];
    this.sink.write(text);
  }
}
