/**
 * The summary table of a bench/run-all output directory, in markdown:
 *
 *   npx tsx bench/summary.ts /tmp/vxnetd-bench-XXXXXX
 *
 * Reads results.jsonl (one line per bench, written by the benches when
 * VXNETD_BENCH_JSON is set) and, for benches that write no JSON
 * (metrics-scrape.ts) or that failed, their text output <name>.txt.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmt, table } from './lib.js';

const dir = process.argv[2];
if (!dir || !existsSync(dir)) {
  console.error('usage: npx tsx bench/summary.ts <run-all output directory>');
  process.exit(2);
}

const records: any[] = existsSync(join(dir, 'results.jsonl'))
  ? readFileSync(join(dir, 'results.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line))
  : [];
const rows: Array<Array<string | number>> = [];
const verdict = (ok: boolean | undefined) => (ok === undefined ? '' : ok ? 'met' : '**NOT met**');
const best = (v: number[]) => Math.min(...v);

for (const r of records.filter((x) => x.bench === 'converge')) {
  const batch = best(r.ipBatchMs);
  const fastest = (runs: any[]) => (runs?.length ? runs.reduce((a: any, b: any) => (b.ms < a.ms ? b : a)) : undefined);
  const failures = (list: string[] | undefined) => (list?.length ? `; FAILED ${list.length} of ${r.repeat}: ${list[0]!.slice(0, 140)}` : '');
  const empty = fastest(r.fromEmpty);
  const tag = `converge ${r.networks}${r.repeat > 1 ? ` (best of ${r.repeat})` : ''}`;
  rows.push([tag, 'ip -batch', `${fmt.s(batch)} s`, '', '']);
  const ratioRow = (what: string, runs: any[] | undefined, failed: string[] | undefined, target: string) => {
    const run = fastest(runs as any[]);
    rows.push([
      tag,
      what,
      `${run ? `${fmt.s(run.ms)} s = ${fmt.x(run.ms / batch)} ip -batch` : 'no successful run'}${failures(failed)}`,
      target,
      verdict(run ? run.ms / batch <= 1.5 : false),
    ]);
  };
  ratioRow('vxnetd, keys in etcd → agent start → ready', r.fromEmpty, r.fromEmptyFailures, '≤ 1.5× ip -batch');
  if (r.burst?.length || r.burstFailures?.length) ratioRow('vxnetd running, burst of puts → all up', r.burst, r.burstFailures, '(same)');
  if (r.perOpMs?.length) {
    const perOp = best(r.perOpMs);
    const sampled = r.perOpSample < r.networks ? ` (estimated from ${r.perOpSample})` : '';
    rows.push([
      tag,
      `one ip per op${sampled}`,
      `${fmt.s(perOp)} s = ${fmt.x(perOp / batch)} ip -batch${empty ? ` = ${fmt.x(perOp / empty.ms)} vxnetd` : ''}`,
      '≥ 5× vxnetd',
      verdict(empty ? perOp / empty.ms >= 5 : false),
    ]);
  }
}
for (const r of records.filter((x) => x.bench === 'latency')) {
  rows.push([
    `latency, ${r.rate} puts/s × ${r.seconds} s`,
    'etcd put → both devices up (ip monitor)',
    `p50 ${fmt.ms(r.p50)} / p95 ${fmt.ms(r.p95)} / p99 ${fmt.ms(r.p99)} ms`,
    'p99 < 50 ms',
    verdict(r.p99 < 50),
  ]);
}
for (const r of records.filter((x) => x.bench === 'restart')) {
  const tag = `restart over ${r.networks}${r.fillChunk ? ` (filled ${r.fillChunk} at a time)` : ''}`;
  rows.push([tag, 'spawn → /readyz 200', `${fmt.s(r.readyMs)} s`, '< 2 s', verdict(r.readyMs < 2_000)]);
  rows.push([tag, 'mutating netlink requests / link notifications / ifindex changes', `${r.mutating} / ${r.events} / ${r.ifindexChanged}`, '0 / 0 / 0', verdict(r.mutating === 0 && r.events === 0 && r.ifindexChanged === 0)]);
  if (r.scrapeMs?.length) {
    rows.push([tag, `GET /metrics of the agent, ${r.scrapeDevices} devices`, `p50 ${fmt.ms(r.scrapeP50)} / p95 ${fmt.ms(r.scrapeP95)} ms`, '< 100 ms', verdict(r.scrapeP95 < 100)]);
  }
}
const metricsText = existsSync(join(dir, 'metrics-scrape.txt')) ? readFileSync(join(dir, 'metrics-scrape.txt'), 'utf8') : '';
if (metricsText) {
  const line = (prefix: string) => metricsText.split('\n').find((l) => l.startsWith(prefix));
  const cells = (l: string | undefined) => l?.trim().split(/\s{2,}/) ?? [];
  const http = cells(line('vxnetd over HTTP'));
  const ne = cells(line('node_exporter netdev'));
  const target = line('target');
  if (http.length >= 3 && ne.length >= 3) {
    rows.push([
      'metrics-scrape (bench/metrics-scrape.ts)',
      '/metrics p50 / p95: vxnetd over HTTP vs node_exporter netdev',
      `${http[1]} / ${http[2]} ms vs ${ne[1]} / ${ne[2]} ms`,
      'faster than node_exporter and < 100 ms',
      target ? verdict(/: met/.test(target)) : '',
    ]);
  }
}
for (const r of records.filter((x) => x.bench === 'idle')) {
  const tag = `idle at ${r.networks}${r.fillChunk ? ` (filled ${r.fillChunk} at a time)` : ''}`;
  rows.push([tag, `CPU over ${r.idleSeconds} s`, `${r.cpuPercent.toFixed(2)}% of one core`, '~0', verdict(r.cpuPercent < 1)]);
  rows.push([tag, 'VmRSS (peak VmHWM)', `${fmt.ms((r.rssMiB * 2 ** 20) / 1e6)} MB (${fmt.ms((r.hwmMiB * 2 ** 20) / 1e6)} MB)`, '< 150 MB', verdict((r.rssMiB * 2 ** 20) / 1e6 < 150)]);
}

// Benches that failed (their .txt ends with "bench failed: …") or wrote nothing.
const recorded = new Set(records.map((r) => r.bench));
for (const file of readdirSync(dir).filter((f) => f.endsWith('.txt')).sort()) {
  const text = readFileSync(join(dir, file), 'utf8');
  const failure = /bench failed: (.*)/.exec(text) ?? /^metrics-scrape: (.*)$/m.exec(text);
  const name = file.replace(/\.txt$/, '');
  const kind = name.replace(/-\d+$/, '');
  if (failure || (!recorded.has(kind) && kind !== 'metrics-scrape')) {
    rows.push([name, 'FAILED', (failure?.[1] ?? 'no result').slice(0, 160), '', '**failed**']);
  }
}

const machine = records[0]?.machine;
console.log(`## bench/run-all summary${machine ? ` — ${machine.date.slice(0, 10)}` : ''}\n`);
if (machine) {
  console.log(`Machine: ${machine.nproc} × ${machine.cpu}, ${machine.memGiB} GiB, kernel ${machine.kernel}, Node ${machine.node}, ${machine.iproute2}, ${machine.etcd}. vxnetd: ${machine.agent} at ${machine.commit}.\n`);
}
console.log(table(['bench', 'measure', 'value', 'target (DESIGN.md §7)', 'verdict'], rows));
const foreign = records.flatMap((r) => r.foreign ?? []);
if (foreign.length) {
  console.log(`\nOther test or benchmark processes were running on this machine during ${records.filter((r) => r.foreign?.length).map((r) => r.bench).join(', ')}: wall-clock numbers may be inflated.`);
}
