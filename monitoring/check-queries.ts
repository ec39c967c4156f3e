/**
 * Checks that the dashboard, the alerting rules and the rule tests use only metrics and
 * labels vxnetd really exports. The reference is not a list kept by hand: it is the
 * exposition of src/metrics rendered here with one managed network, so a renamed metric
 * or label fails this check instead of leaving empty panels and silent alerts.
 *
 *   node --import tsx monitoring/check-queries.ts DASHBOARD-QUERIES.yml
 *
 * Also validates the dashboard's structure, and writes its queries (Grafana variables
 * replaced) as a rule file to DASHBOARD-QUERIES.yml, for `promtool check rules` to parse.
 * Run by monitoring/check. Exit status 1 with one line per problem.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createMetrics } from '../src/metrics/metrics.js';
import { IFF_LOWER_UP, IFF_UP, type Link } from '../src/model/link.js';

const here = dirname(fileURLToPath(import.meta.url));
const DASHBOARD = join(here, 'vxnetd-dashboard.json');
const RULES = join(here, 'vxnetd-alerts.yml');
const RULE_TESTS = join(here, 'vxnetd-alerts.test.yml');

/** Labels Prometheus adds to every scraped series. */
const TARGET_LABELS = ['job', 'instance'];
/** Series Prometheus makes for every target itself. */
const SCRAPE_SERIES = new Map([['up', new Set<string>()]]);

/** Sample name → its label names, from a real exposition with one network (a vxlan in a bridge). */
async function exportedSeries(): Promise<Map<string, Set<string>>> {
  const alias = 'vxnetd:ff01 host=hv001 etcd=cdf818194e3a8c32 prefix=/v1 net=17';
  const stats = { rxBytes: 1, txBytes: 1, rxPackets: 1, txPackets: 1, rxErrors: 0, txErrors: 0, rxDropped: 0, txDropped: 0 };
  const up = IFF_UP | IFF_LOWER_UP;
  const links: Link[] = [
    { index: 10, name: 'brff01', kind: 'bridge', alias, flags: up, mtu: 1450, carrierChanges: 1, stats },
    { index: 11, name: 'vxlanff01', kind: 'vxlan', alias, master: 10, flags: up, mtu: 1450, carrierChanges: 1, stats },
  ];
  const metrics = createMetrics({
    kernel: { dumpLinks: async () => links },
    gauges: {
      networksDesired: () => 1,
      networksReady: () => 1,
      networksError: () => 0,
      devicesLeftAlone: () => 0,
      etcdConnected: () => true,
      watchRevision: () => 1,
    },
    version: '0.0.0',
  });
  // Labelled families have no samples until used.
  metrics.countNetlinkRequest('create', 'ok');
  metrics.countSpecError('mtu');
  metrics.observeReconcile(0.01);
  const { status, body } = await metrics.render();
  if (status !== 200) throw new Error(`rendering the metrics failed: ${status} ${body}`);

  const series = new Map(SCRAPE_SERIES);
  for (const line of body.split('\n')) {
    // Families without samples yet (nodejs_gc_duration_seconds before the first GC) still
    // count, with the labels their samples show when they have some.
    const type = /^# TYPE (\S+) (\w+)$/.exec(line);
    if (type) {
      const suffixes = { histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'] }[type[2]!] ?? [''];
      const names = suffixes.map((suffix) => type[1] + suffix);
      for (const name of names) if (!series.has(name)) series.set(name, new Set());
      continue;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$/.exec(line);
    if (!sample) continue;
    const labels = series.get(sample[1]!) ?? new Set<string>();
    for (const [, name] of (sample[2] ?? '').matchAll(/([a-zA-Z_]\w*)="(?:[^"\\]|\\.)*"/g)) labels.add(name!);
    series.set(sample[1]!, labels);
  }
  return series;
}

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'inf', 'nan', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

/** Grafana's variables as Prometheus sees them once Grafana has replaced them. */
function withoutGrafanaVariables(query: string): string {
  return query
    .replace(/\$__rate_interval|\$__interval|\$\{__rate_interval\}|\$\{__interval\}/g, '5m')
    .replace(/\$__range|\$\{__range\}/g, '1h')
    .replace(/\$\{?\w+\}?/g, '.*');
}

/**
 * Problems with the metric and label names of one PromQL expression; `legend` is a
 * Grafana legend format whose {{label}} references are checked the same way.
 */
function nameProblems(expr: string, series: Map<string, Set<string>>, legend = ''): string[] {
  const problems: string[] = [];
  const used = new Map<string, Set<string>>();
  const labelsOf = (metric: string) => {
    const base = metric.replace(/_(bucket|sum|count)$/, '');
    const labels = series.get(metric);
    if (!labels) return undefined;
    const all = new Set([...labels, ...TARGET_LABELS]);
    if (metric.endsWith('_bucket') && series.has(`${base}_count`)) all.add('le');
    return all;
  };
  const useMetric = (metric: string) => {
    const labels = labelsOf(metric);
    if (labels) used.set(metric, labels);
    else problems.push(`unknown metric ${metric}`);
    return labels;
  };

  // Selectors first: the metric and the label names of its matchers.
  let rest = expr.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g, (_, metric: string | undefined, matchers: string) => {
    if (!metric) {
      problems.push(`selector without a metric name: {${matchers}}`);
      return ' ';
    }
    const labels = useMetric(metric);
    const withoutValues = matchers.replace(/"(?:[^"\\]|\\.)*"/g, '');
    for (const [, label] of withoutValues.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) {
      if (labels && !labels.has(label!)) problems.push(`${metric} has no label ${label}`);
    }
    return ' ';
  });
  rest = rest.replace(/"(?:[^"\\]|\\.)*"/g, ' ').replace(/\[[^\]]*\]/g, ' ').replace(/\boffset\s+\S+/g, ' ');
  const grouping: string[] = [];
  rest = rest.replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_, labels: string) => {
    grouping.push(...labels.split(',').map((l) => l.trim()).filter(Boolean));
    return ' ';
  });
  // What is left: functions (followed by "("), keywords, numbers and bare metric names.
  for (const [, word] of rest.matchAll(/(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:]|\s*\()/g)) {
    if (!KEYWORDS.has(word!)) useMetric(word!);
  }
  const known = new Set([...used.values()].flatMap((labels) => [...labels]));
  for (const label of grouping) if (!known.has(label)) problems.push(`no metric in the expression has label ${label} (grouping)`);
  for (const [, label] of legend.matchAll(/\{\{\s*(\w+)\s*\}\}/g)) {
    if (!known.has(label!)) problems.push(`no metric in the expression has label ${label} (legend)`);
  }
  return problems;
}

/** `label_values(selector, label)` of a Grafana variable: the selector's names and the label. */
function labelValuesProblems(query: string, series: Map<string, Set<string>>): string[] {
  const call = /^label_values\((.*),\s*(\w+)\s*\)$/.exec(query.trim());
  if (!call) return [`not a label_values(metric, label) query: ${query}`];
  const expr = withoutGrafanaVariables(call[1]!);
  return nameProblems(expr, series, `{{${call[2]}}}`);
}

/** The values of `key:` in a YAML file: plain or single-quoted on one line, or a | / > block. */
function yamlValues(file: string, key: string): string[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const values: string[] = [];
  const keyLine = new RegExp(`^(\\s*)(?:- )?${key}:\\s*(.*)$`);
  for (let i = 0; i < lines.length; i++) {
    const match = keyLine.exec(lines[i]!);
    if (!match) continue;
    const [, indent, value] = match as unknown as [string, string, string];
    if (/^[|>][-+]?$/.test(value)) {
      const block: string[] = [];
      while (i + 1 < lines.length && (lines[i + 1]!.trim() === '' || lines[i + 1]!.search(/\S/) > indent.length)) block.push(lines[++i]!.trim());
      values.push(block.join('\n').trim());
    } else if (value.startsWith("'")) {
      if (!/^'(?:[^']|'')*'$/.test(value)) throw new Error(`${file}:${i + 1}: a quoted ${key} must end on its line`);
      values.push(value.slice(1, -1).replace(/''/g, "'"));
    } else if (value.startsWith('"') || value === '') {
      throw new Error(`${file}:${i + 1}: write ${key} plain, single-quoted or as a | block`);
    } else {
      values.push(value);
    }
  }
  return values;
}

/** An input series of a rule test must carry exactly the labels a scraped vxnetd series has. */
function testSeriesProblems(text: string, series: Map<string, Set<string>>): string[] {
  const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$/.exec(text);
  if (!match) return [`cannot read series ${text}`];
  const labels = new Set([...match[2]!.matchAll(/([a-zA-Z_]\w*)="(?:[^"\\]|\\.)*"/g)].map((m) => m[1]!));
  const exported = series.get(match[1]!);
  if (!exported) return [`unknown metric ${match[1]}`];
  const expected = new Set([...exported, ...TARGET_LABELS]);
  const missing = [...expected].filter((l) => !labels.has(l));
  const extra = [...labels].filter((l) => !expected.has(l));
  return missing.length || extra.length ? [`${match[1]}: labels missing [${missing}] extra [${extra}]`] : [];
}

interface Target {
  refId?: string;
  expr?: string;
  legendFormat?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id?: number;
  type?: string;
  title?: string;
  gridPos?: { h: number; w: number; x: number; y: number };
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

const DATASOURCE = '${datasource}';

/** Grafana would import a malformed dashboard half-broken, or not at all. */
function dashboardProblems(dashboard: any): string[] {
  const problems: string[] = [];
  if (typeof dashboard.schemaVersion !== 'number' || dashboard.schemaVersion < 36) problems.push(`schemaVersion ${dashboard.schemaVersion} (want 36 or later)`);
  if (!dashboard.uid || !dashboard.title) problems.push('uid and title are required');
  const variables: any[] = dashboard.templating?.list ?? [];
  const datasource = variables.find((v) => v.name === 'datasource');
  if (datasource?.type !== 'datasource' || datasource.query !== 'prometheus') problems.push('no variable "datasource" of type datasource, query prometheus');
  for (const v of variables.filter((v) => v.type === 'query')) {
    if (v.datasource?.uid !== DATASOURCE) problems.push(`variable ${v.name}: datasource must be ${DATASOURCE}`);
    // Grafana runs query.query and shows definition: they must not tell two stories.
    if (v.definition !== v.query?.query) problems.push(`variable ${v.name}: definition differs from query.query`);
  }
  for (const name of ['instance', 'vni']) if (!variables.some((v) => v.name === name)) problems.push(`no variable ${name}`);
  const ids = new Set<number>();
  const panels: Panel[] = (dashboard.panels ?? []).flatMap((p: Panel) => [p, ...(p.panels ?? [])]);
  for (const panel of panels) {
    const where = `panel ${JSON.stringify(panel.title)}`;
    if (typeof panel.id !== 'number' || ids.has(panel.id)) problems.push(`${where}: missing or repeated id ${panel.id}`);
    ids.add(panel.id!);
    if (!panel.gridPos || !(panel.gridPos.x + panel.gridPos.w <= 24)) problems.push(`${where}: gridPos missing or wider than 24`);
    if (panel.type === 'row') continue;
    if (panel.datasource?.uid !== DATASOURCE) problems.push(`${where}: datasource must be ${DATASOURCE}`);
    if (!panel.targets?.length) problems.push(`${where}: no queries`);
    const refIds = new Set<string>();
    for (const target of panel.targets ?? []) {
      if (!target.expr) problems.push(`${where}: a query without expr`);
      if (!target.refId || refIds.has(target.refId)) problems.push(`${where}: missing or repeated refId ${target.refId}`);
      refIds.add(target.refId!);
      if (target.datasource?.uid !== DATASOURCE) problems.push(`${where} ${target.refId}: datasource must be ${DATASOURCE}`);
    }
  }
  return problems;
}

/** The checker must reject these, or its passing means nothing. */
const MUST_REJECT = [
  'rate(vxnetd_no_such_metric_total[5m])',
  'vxnetd_network_up{interface="vxlanff01"}',
  'sum by (interface) (vxnetd_network_up)',
  'vxnetd_network_up * on (job, instance, device) group_left (alias) vxnetd_network_info',
];

async function main(): Promise<number> {
  const queriesOut = process.argv[2];
  if (!queriesOut) throw new Error('usage: check-queries.ts DASHBOARD-QUERIES.yml');
  const series = await exportedSeries();
  const problems: string[] = [];
  const report = (where: string, found: string[]) => problems.push(...found.map((p) => `${where}: ${p}`));

  for (const expr of MUST_REJECT) {
    if (nameProblems(expr, series).length === 0) problems.push(`the checker accepts ${expr}: it is broken`);
  }

  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8'));
  report('dashboard', dashboardProblems(dashboard));
  const queries: string[] = [];
  for (const v of dashboard.templating?.list ?? []) {
    if (v.type === 'query') report(`dashboard variable ${v.name}`, labelValuesProblems(v.query?.query ?? v.query ?? '', series));
  }
  const panels: Panel[] = (dashboard.panels ?? []).flatMap((p: Panel) => [p, ...(p.panels ?? [])]);
  for (const panel of panels) {
    for (const target of panel.targets ?? []) {
      if (!target.expr) continue;
      const expr = withoutGrafanaVariables(target.expr);
      report(`dashboard "${panel.title}" ${target.refId}`, nameProblems(expr, series, target.legendFormat));
      queries.push(expr);
    }
  }

  const ruleExprs = yamlValues(RULES, 'expr');
  for (const expr of ruleExprs) report(`${RULES} expr ${JSON.stringify(expr)}`, nameProblems(expr, series));
  const testSeries = yamlValues(RULE_TESTS, 'series');
  for (const text of testSeries) report(`${RULE_TESTS} series ${text}`, testSeriesProblems(text, series));

  // JSON strings are YAML: every query becomes a recording rule promtool parses.
  const rules = queries.map((expr, i) => `      - record: dashboard_query_${i + 1}\n        expr: ${JSON.stringify(expr)}\n`).join('');
  writeFileSync(queriesOut, `groups:\n  - name: vxnetd-dashboard-queries\n    rules:\n${rules}`);

  for (const problem of problems) console.log(`check-queries: FAIL ${problem}`);
  console.log(
    `check-queries: ${problems.length ? 'FAILED' : 'ok'}  ${queries.length} dashboard queries, ${ruleExprs.length} rule expressions, ` +
      `${testSeries.length} test series against ${series.size} exported series names; wrote ${queriesOut}`,
  );
  console.log(`check-queries: rule expressions ${ruleExprs.length}`);
  return problems.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`check-queries: FAIL ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  },
);
