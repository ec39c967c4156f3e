#!/usr/bin/env node
/** vxnetd: the agent's entry point. Wires etcd → agent → kernel, HTTP, logs and signals. */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { pino } from 'pino';
import { Agent } from '../agent/agent.js';
import { startHttpServer } from '../agent/http.js';
import { createSystemdNotifier } from '../agent/sdnotify.js';
import { cachedUnderlayAddress } from '../agent/underlay-address.js';
import { RadvdSupervisor } from '../agent/radvd.js';
import { systemTimers } from '../reconcile/timers.js';
import { NetlinkKernel } from '../kernel/rtnl.js';
import { procIpv6Settings } from '../kernel/sysctl.js';
import { formatAddress } from '../model/group.js';
import { createMetrics } from '../metrics/metrics.js';
import { DesiredStateSource } from '../store/source.js';
import { loggableConfig, parseAgentConfig, VXNETD_FLAGS, VXNETD_USAGE, type AgentConfig } from './config.js';
import { UsageError, helpText } from './flags.js';
import { BatchedLog } from './log-stream.js';

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
const SHUTDOWN_DEADLINE_MS = 4500;
const MEMBER_ADDRESS_CHECK_MS = 60_000;

async function main(): Promise<void> {
  let parsed;
  try {
    parsed = parseAgentConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`vxnetd: ${error.message}\n`);
    process.exit(2);
  }
  if (parsed.kind === 'help') return void process.stdout.write(`${helpText(VXNETD_USAGE, VXNETD_FLAGS)}\n`);
  if (parsed.kind === 'version') return void process.stdout.write(`vxnetd ${VERSION}\n`);
  await run(parsed.config);
}

async function run(config: AgentConfig): Promise<void> {
  // Synchronous writes, batched for up to 10 ms (warnings at once): see BatchedLog.
  const logStream = new BatchedLog(pino.destination({ sync: true }));
  process.on('exit', () => logStream.flush());
  const log = pino(
    // No `redact` option: it clones every line's fields. The only line with secrets redacts them itself.
    { level: config.logLevel, base: { host: config.hostname } },
    logStream,
  );
  log.info({ version: VERSION, config: loggableConfig(config) }, 'vxnetd starting');
  const plainEndpoints = config.etcd.endpoints.filter((endpoint) => endpoint.startsWith('http://'));
  if (config.etcd.password && plainEndpoints.length) {
    log.warn({ op: 'etcd', endpoints: plainEndpoints }, `the etcd password travels unencrypted to ${plainEndpoints.join(', ')}: use https:// endpoints`);
  }

  let metrics: ReturnType<typeof createMetrics> | undefined;
  const kernel = new NetlinkKernel(
    { request: (op, result) => metrics?.countNetlinkRequest(op, result) },
    { neighbourEvents: config.flood === 'unicast', addressEvents: config.router !== undefined },
  );
  kernel.events.on('socket-error', (role: string, error: Error) => log.warn({ socket: role, err: error.message }, 'netlink socket error'));
  kernel.subscribe();
  const eventBuffer = kernel.eventBufferBytes() ?? 0;
  if (eventBuffer < 4 * 1024 * 1024) {
    log.warn(
      { op: 'netlink', eventBufferBytes: eventBuffer },
      `link-event receive buffer is only ${Math.round(eventBuffer / 1024)} KiB: raise net.core.rmem_max (e.g. sysctl -w net.core.rmem_max=8388608) so bursts of device changes made by others cannot overflow it`,
    );
  }

  let source: DesiredStateSource | undefined;
  let agentRef: Agent | undefined;
  const radvd = config.router
    ? new RadvdSupervisor(
        { binary: config.router.radvd, directory: config.router.radvdDir, timers: systemTimers, ...(process.getuid?.() === 0 && systemHasUser('radvd') ? { user: 'radvd' } : {}) },
        log,
        (outcomes) => agentRef?.radvdReported(outcomes),
      )
    : undefined;
  if (config.router) prepareRouter(config.router.radvdDir, log);
  const agent = new Agent(
    kernel,
    log,
    {
      underlay: config.underlay,
      prefix: config.prefix,
      ...(config.takeOver ? { takeOver: config.takeOver } : {}),
      scope: config.scope,
      resyncIntervalMs: config.resyncIntervalMs,
      host: {
        hostname: config.hostname,
        groupBase: config.groupBase,
        ttl: config.ttl,
        dstport: config.dstport,
        ...(config.local ? { local: config.local } : {}),
        flood: config.flood,
      },
      ...(radvd ? { router: { advertiser: radvd } } : {}),
      ipv6Settings: procIpv6Settings,
    },
    {
      status: (hex, status) => source?.writeStatus(hex, status),
      observeReconcile: (seconds) => metrics?.observeReconcile(seconds),
      countSpecError: (reason) => metrics?.countSpecError(reason),
      bulkApply: (active) => source?.coalesceStatusWrites(active),
      ready: () => readinessChanged(),
      membership: (hex, member) => source?.publishMembership(hex, member),
    },
  );

  agentRef = agent;
  const startedAt = new Date().toISOString();
  const underlayAddress = cachedUnderlayAddress(config.underlay);
  // What other hosts flood to: --local when given, else the underlay's address of the overlay's family.
  const memberAddressOf = cachedUnderlayAddress(config.underlay, { maxAgeMs: MEMBER_ADDRESS_CHECK_MS / 2, family: config.groupBase.family });
  const memberAddress = () => (config.local ? formatAddress(config.local) : memberAddressOf.get());
  const isReady = () => agent.ready && (source?.isConnected ?? false);
  source = new DesiredStateSource({
    // etcd → agent by direct calls: Agent.applySnapshot() / applyChange() → the reconcile loop → the kernel.
    sink: agent,
    etcd: config.etcd,
    prefix: config.prefix,
    hostname: config.hostname,
    watchAttachments: config.scope === 'attached',
    ...(config.router ? { router: config.router.number !== undefined ? { number: config.router.number } : {} } : {}),
    memberAddress,
    log,
    liveness: () => ({
      version: VERSION,
      pid: process.pid,
      startedAt,
      underlay: config.underlay,
      underlayAddress: underlayAddress.get(),
      ready: isReady(),
      ...(config.router ? { role: 'router' } : {}),
    }),
  });

  metrics = createMetrics({
    kernel,
    version: VERSION,
    gauges: {
      networksDesired: () => agent.counts().desired,
      networksReady: () => agent.counts().ready,
      networksError: () => agent.counts().error,
      devicesLeftAlone: () => agent.counts().leftAlone,
      floodPeers: () => agent.floodPeerCounts(),
      ...(radvd ? { prefixesAdvertised: () => radvd.advertised, radvdRestarts: () => radvd.restarts } : {}),
      etcdConnected: () => source?.isConnected ?? false,
      watchRevision: () => source?.watchRevision ?? 0,
    },
  });

  const systemd = createSystemdNotifier(process.env, (msg, err) => log.warn({ err: (err as Error | undefined)?.message }, msg));
  let announcedReady = false;
  function readinessChanged(): void {
    void source?.refreshLiveness();
    if (isReady() && !announcedReady) {
      announcedReady = true;
      systemd.ready('converged');
      log.info({ op: 'ready' }, 'ready');
    }
  }

  let stopping = false;
  let warnedGroupBase: string | undefined;
  source.on('snapshot', (snapshot) => {
    const cloudGroupBase = snapshot.cloudGroupBase;
    if (cloudGroupBase !== undefined && cloudGroupBase !== config.groupBase.text && cloudGroupBase !== warnedGroupBase) {
      warnedGroupBase = cloudGroupBase;
      log.warn(
        { op: 'config', groupBase: config.groupBase.text, cloudGroupBase },
        `--group-base ${config.groupBase.text} differs from the cloud-wide group base ${cloudGroupBase} (vxnetctl settings get): vxnetctl allocates VNIs by the cloud-wide one, so set --group-base ${cloudGroupBase} here or change the setting`,
      );
    }
  });
  source.on('connected', (connected) => {
    if (stopping) return;
    readinessChanged();
    log[connected ? 'info' : 'warn']({ op: 'etcd', connected }, connected ? 'connected to etcd' : 'etcd connection lost; keeping the data plane as it is');
    systemd.status(connected ? 'connected to etcd' : 'etcd unreachable, data plane kept');
  });

  const server = await startHttpServer(config.metricsListen, {
    ready: () => ({ ready: isReady(), why: !agent.ready ? 'first reconcile not finished' : 'etcd not connected' }),
    metrics: () => metrics!.render(),
    refuseClient: (remoteAddress) => agent.isTenantClient(remoteAddress),
  });

  radvd?.start();
  agent.start();
  source.start();
  // An underlay address that changes reaches the members index (and every peer's flood entries) within this.
  setInterval(() => source?.checkMemberAddress(), MEMBER_ADDRESS_CHECK_MS).unref();

  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'stopping: devices are left in place');
    systemd.stopping();
    const deadline = setTimeout(() => {
      log.error({}, 'shutdown took too long; exiting');
      process.exit(1);
    }, SHUTDOWN_DEADLINE_MS);
    agent.stop();
    // radvd keeps advertising: stopping it would withdraw every VM's default route.
    radvd?.stop();
    await source?.stop();
    server.close();
    server.closeAllConnections();
    // The request thread must end (its netlink socket closed) before the process does.
    await kernel.close();
    systemd.close();
    clearTimeout(deadline);
    log.info({}, 'stopped');
    process.exit(0);
  };
  process.on('SIGTERM', () => void shutdown('SIGTERM'));
  process.on('SIGINT', () => void shutdown('SIGINT'));
  process.on('uncaughtException', (error) => {
    log.fatal({ err: error.stack }, 'uncaught exception');
    process.exit(1);
  });
}

/** A router forwards between its tenants' networks and the rest: IPv6 forwarding on, and radvd's directory there. */
function prepareRouter(radvdDir: string, log: { error(fields: object, msg: string): void; info(fields: object, msg: string): void }): void {
  try {
    mkdirSync(radvdDir, { recursive: true, mode: 0o755 });
  } catch (error) {
    log.error({ op: 'radvd', err: (error as Error).message }, `cannot create ${radvdDir} for radvd's files`);
  }
  const forwarding = '/proc/sys/net/ipv6/conf/all/forwarding';
  try {
    if (readFileSync(forwarding, 'utf8').trim() !== '1') {
      writeFileSync(forwarding, '1');
      log.info({ op: 'router' }, 'IPv6 forwarding turned on (net.ipv6.conf.all.forwarding=1)');
    }
  } catch (error) {
    log.error(
      { op: 'router', err: (error as Error).message },
      `cannot turn IPv6 forwarding on (${forwarding}): VMs get addresses and a default route but nothing is forwarded; set net.ipv6.conf.all.forwarding=1 (sysctl.d), or use the router drop-in of the systemd unit`,
    );
  }
}

/** radvd drops root for this user when started as root; started by a non-root agent (the systemd unit) it runs as that user already. */
function systemHasUser(name: string): boolean {
  try {
    return readFileSync('/etc/passwd', 'utf8').split('\n').some((line) => line.startsWith(`${name}:`));
  } catch {
    return false;
  }
}

main().catch((error: Error) => {
  process.stderr.write(`vxnetd: ${error.stack ?? error.message}\n`);
  process.exit(1);
});
