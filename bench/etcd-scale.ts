/**
 * etcd at scale: reads that page through 50,000 networks (issue 17, item 3).
 *
 *   sudo npx tsx bench/etcd-scale.ts [--networks 50000] [--attached 100] [--host-attachments 50000] [--repeat 3]
 *
 * 1. N networks in etcd (transactions of 128 puts), `--attached` of them attached to the agent's
 *    host, and `--host-attachments` attachments of another host (no agent), so that `vxnetctl
 *    status` pages through as many keys as `network list`.
 * 2. `vxnetctl network list` and `vxnetctl status`, each `--repeat` times (spawn to exit); one
 *    `network list --json` (untimed) checks that every network is listed.
 * 3. vxnetd `--scope attached`: spawn → "connected to etcd" (Node start-up, the paged list of
 *    every network and attachment, the liveness lease) and spawn → /readyz 200 (the attached
 *    networks created too).
 * 4. vxnetd `--scope all`: spawn → "connected to etcd" only. Ready would mean 50,000 device
 *    pairs, which this machine cannot hold; the agent is stopped right after its list and its
 *    namespace deleted with whatever it had begun to create.
 */
import { fileURLToPath } from 'node:url';
import {
  fmt,
  foreignActivity,
  log,
  logTime,
  machine,
  main,
  networks,
  now,
  parseArgs,
  percentile,
  putNetworks,
  quiesce,
  record,
  run,
  startAgent,
  table,
  timedRun,
  waitReadyAt,
  whileAlive,
  withDataCentre,
  type DataCentre,
} from './lib.js';
import { putInTxns } from '../native-tests/harness/observe.js';
import { waitFor } from '../native-tests/harness/wait.js';

const args = parseArgs('sudo npx tsx bench/etcd-scale.ts --networks 50000', {
  networks: { default: 50_000, help: 'networks in etcd' },
  attached: { default: 100, help: "networks attached to the agent's host (created in --scope attached)" },
  hostAttachments: { default: 50_000, help: 'attachments of a host without an agent (read by vxnetctl status)' },
  repeat: { default: 3, help: 'runs of each vxnetctl command' },
});

const VXNETCTL = fileURLToPath(new URL('../dist/cli/vxnetctl.js', import.meta.url));
const HOST = 'es';
const IDLE_HOST = 'rack1';

/** Puts `<prefix>/hosts/<host>/networks/<hex>` = {} for each hex, 128 per transaction (etcd's default limit). */
async function putAttachments(dc: DataCentre, host: string, hexes: string[]): Promise<void> {
  await putInTxns(await dc.etcd(), hexes.map((hex) => [`${dc.prefix}/hosts/${host}/networks/${hex}`, '{}']), 128);
}

main(async () => {
  const N = args.networks;
  const nets = networks(N);
  const foreign = foreignActivity();
  if (foreign.length) log(`note: other benchmark/test processes are running on this machine:\n  ${foreign.join('\n  ')}`);
  const r = {
    networks: N,
    attached: args.attached,
    hostAttachments: args.hostAttachments,
    putMs: 0,
    listed: 0,
    listMs: [] as number[],
    statusMs: [] as number[],
    attachedListedMs: 0,
    attachedReadyMs: 0,
    allListedMs: 0,
    foreign,
  };

  await withDataCentre([HOST], async (dc) => {
    const started = now();
    await putNetworks(dc, nets);
    await putAttachments(dc, HOST, nets.slice(0, args.attached).map((net) => net.hex));
    await putAttachments(dc, IDLE_HOST, nets.slice(0, args.hostAttachments).map((net) => net.hex));
    r.putMs = now() - started;
    log(`put ${N} networks and ${args.attached + args.hostAttachments} attachments in ${fmt.s(r.putMs)} s`);

    const vxnetctl = (...command: string[]) => [process.execPath, VXNETCTL, '--etcd-endpoints', dc.etcdEndpoint, '--prefix', dc.prefix, ...command];
    r.listed = (JSON.parse(run(vxnetctl('network', 'list', '--json'), 'vxnetctl network list --json')) as unknown[]).length;
    if (r.listed !== N) throw new Error(`vxnetctl network list showed ${r.listed} networks, not ${N}`);

    // The agent first: its statuses are then part of what `vxnetctl status` reads.
    await quiesce('attached agent');
    let spawned = now();
    const attached = await startAgent(dc, HOST, ['--scope', 'attached']);
    r.attachedReadyMs = (await waitReadyAt(attached, 300_000)) - spawned;
    r.attachedListedMs = logTime(attached, 'connected to etcd')! - spawned;
    await whileAlive(
      attached,
      waitFor(async () => (await (await dc.etcd()).getAll().prefix(`${dc.prefix}/hosts/${HOST}/status/`).keys()).length === args.attached, 'every attached status written', 60_000),
    );
    await attached.stop();
    log(`--scope attached: listed after ${fmt.s(r.attachedListedMs)} s, ready after ${fmt.s(r.attachedReadyMs)} s`);

    for (let i = 0; i < args.repeat; i++) {
      await quiesce('vxnetctl');
      r.listMs.push(await timedRun(vxnetctl('network', 'list'), 'vxnetctl network list'));
      r.statusMs.push(await timedRun(vxnetctl('status'), 'vxnetctl status'));
    }

    await quiesce('all agent');
    spawned = now();
    const all = await startAgent(dc, HOST, ['--scope', 'all']);
    const listedAt = await whileAlive(all, waitFor(async () => logTime(all, 'connected to etcd'), 'the --scope all agent listed', 300_000, 10));
    r.allListedMs = listedAt - spawned;
    await all.stop();
    log(`--scope all: listed after ${fmt.s(r.allListedMs)} s (then stopped)`);
  });

  const m = machine();
  const best = (values: number[]) => Math.min(...values);
  console.log(`\n## etcd at ${N} networks — ${m.nproc} CPUs, kernel ${m.kernel}, node ${m.node}, ${m.etcd}\n`);
  console.log(
    table(
      ['what', 'best s', 'median s', 'notes'],
      [
        ['put networks and attachments (txns of 128)', fmt.s(r.putMs), '—', `${N} networks, ${args.attached + args.hostAttachments} attachments`],
        ['vxnetctl network list (spawn → exit)', fmt.s(best(r.listMs)), fmt.s(percentile(r.listMs, 50)), `${r.listed} networks listed, ${r.listMs.length} runs`],
        ['vxnetctl status (spawn → exit)', fmt.s(best(r.statusMs)), fmt.s(percentile(r.statusMs, 50)), `${args.attached + args.hostAttachments} attachments, ${args.attached} statuses, ${r.statusMs.length} runs`],
        ['vxnetd --scope attached: spawn → listed', fmt.s(r.attachedListedMs), '—', 'Node start-up + paged list + liveness lease'],
        ['vxnetd --scope attached: spawn → /readyz 200', fmt.s(r.attachedReadyMs), '—', `${args.attached} attached networks created`],
        ['vxnetd --scope all: spawn → listed', fmt.s(r.allListedMs), '—', `not ready: ${N} device pairs are more than this machine holds`],
      ],
    ),
  );
  record('etcd-scale', r);
});
