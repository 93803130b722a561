/** `burrow serve`: the rendezvous server, with structured logs, clean shutdown and secret reload. */
import { parseArgs } from 'node:util';
import { endpointKey, normaliseAddress, parseHostPort } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { readSecretFile } from '../node/secret.js';
import { startServer } from '../node/server.js';
import { startTstunServer, type TstunServer, type TstunServerEvent } from '../node/tstun.js';
import type { ServerEvent } from '../server/core.js';
import { oneOf, resolveSecrets, type Io } from './common.js';

export const SERVE_USAGE = `burrow serve [--listen HOST:PORT] --secret-file FILE [--alt-port PORT | --no-alt-port]
             [--tstun [[HOST:]PORT]] [--metrics HOST:PORT] [--workers N] [--log-format text|json]
             [--log-level debug|info|warn] [--check]`;

export async function runServe(argv: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args: withOptionalValue(argv, '--tstun'),
    options: {
      listen: { type: 'string' },
      tstun: { type: 'string' },
      'secret-file': { type: 'string' },
      secret: { type: 'string' },
      'alt-port': { type: 'string' },
      'no-alt-port': { type: 'boolean' },
      'log-format': { type: 'string' },
      'log-level': { type: 'string' },
      metrics: { type: 'string' },
      check: { type: 'boolean' },
      workers: { type: 'string' },
    },
    strict: true,
  });
  const format = oneOf('--log-format', values['log-format'], ['text', 'json'] as const, 'text');
  const level = oneOf('--log-level', values['log-level'], ['debug', 'info', 'warn'] as const, 'info');
  let alternatePort: number | false | undefined;
  if (values['no-alt-port'] === true) alternatePort = false;
  else if (values['alt-port'] !== undefined) {
    alternatePort = Number(values['alt-port']);
    if (!Number.isInteger(alternatePort) || alternatePort < 0 || alternatePort > 65535) {
      throw BurrowError.usage(`--alt-port "${values['alt-port']}" is not a port number`);
    }
  }
  if (values.listen !== undefined) checkListen(values.listen);
  // prom-client is loaded only with --metrics.
  const metricsModule = values.metrics !== undefined ? await import('../node/metrics.js') : undefined;
  if (values.metrics !== undefined) metricsModule?.parseMetricsListen(values.metrics);
  const workers = values.workers === undefined ? 1 : Number(values.workers);
  if (!Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw BurrowError.usage(`--workers "${values.workers ?? ''}" is not a number of processes from 1 to 256`);
  }
  const secrets = await resolveSecrets(io, values);
  if (values.check === true) {
    // A dry run for service managers and deploy scripts (`ExecStartPre=burrow serve --check ...`):
    // every option and the secret file are checked, nothing is bound.
    io.stdout.write(`burrow serve: options and ${secrets.length} secret${secrets.length === 1 ? '' : 's'} OK; not started (--check)\n`);
    return 0;
  }
  // pino is loaded here only, so `burrow punch` starts fast.
  const { pino } = await import('pino');
  const destination = format === 'json' ? pino.destination({ dest: 2, sync: true }) : (await import('pino-pretty')).default({ destination: 2, sync: true, colorize: false, translateTime: 'SYS:standard', ignore: 'pid,hostname' });
  const log = pino({ level, base: { pid: process.pid } }, destination);
  // Set when a worker process dies: the server stops as a whole and exits 1, for a supervisor to restart.
  const workerFailed = new AbortController();
  const onEvent = (e: ServerEvent): void => {
    switch (e.type) {
      case 'registered':
        if (e.isNew) log.info({ event: e.type, network: e.network, peer: e.name, from: endpointKey(e.from) }, 'peer registered');
        else log.debug({ event: e.type, network: e.network, peer: e.name, from: endpointKey(e.from) }, 'registration refreshed');
        break;
      case 'introduced':
        log.info({ event: e.type, network: e.network, a: e.a, b: e.b }, 'peers introduced');
        break;
      case 'outcome':
        log.info({ event: e.type, network: e.network, peer: e.name, outcome: e.outcome }, 'peer reported its outcome');
        break;
      case 'rejected':
        log.debug({ event: e.type, from: endpointKey(e.from), reason: e.reason }, 'datagram rejected');
        break;
      case 'wg-endpoint':
        log.info({ event: e.type, network: e.network, key: e.key, endpoint: endpointKey(e.endpoint) }, 'WireGuard endpoint learnt');
        break;
      case 'partner-unreachable':
        log.info({ event: e.type, network: e.network, peer: e.name, server: e.server }, 'partner\'s server is gone; treated as absent');
        break;
      case 'store-error':
        log.warn({ event: e.type, op: e.op, reason: e.reason }, 'the shared store did not answer');
        break;
      case 'worker-exited':
        log.error({ event: e.type, pid: e.pid, code: e.code, signal: e.signal }, 'a worker process exited; stopping the server');
        workerFailed.abort();
        break;
    }
  };
  const onTstunEvent = (e: TstunServerEvent): void => {
    switch (e.type) {
      case 'paired':
        log.info({ event: 'tstun-paired', a: endpointKey(e.first.remote), b: endpointKey(e.second.remote), waitedMs: Math.round(e.waitedMs) }, 'T-STUN clients paired');
        break;
      case 'waiting':
        log.debug({ event: 'tstun-waiting', from: endpointKey(e.client.remote) }, 'T-STUN client waits for a partner');
        break;
      case 'rejected':
        log.debug({ event: 'tstun-rejected', from: endpointKey(e.client.remote), reason: e.reason }, 'T-STUN connection rejected');
        break;
      case 'timed-out':
        log.debug({ event: 'tstun-timed-out', from: endpointKey(e.client.remote), phase: e.phase }, 'T-STUN connection timed out');
        break;
      case 'left':
        log.debug({ event: 'tstun-left', from: endpointKey(e.client.remote), phase: e.phase }, 'T-STUN client left before its answer');
        break;
      case 'internal-error':
        log.warn({ event: 'tstun-internal-error', detail: e.detail }, 'T-STUN internal error; the connection was dropped');
        break;
    }
  };
  const registry = metricsModule?.createProcessRegistry();
  const server = await startServer({
    ...(values.listen !== undefined ? { listen: values.listen } : {}),
    secrets,
    ...(alternatePort !== undefined ? { alternatePort } : {}),
    ...(values.metrics !== undefined ? { metrics: { listen: values.metrics, ...(registry ? { registry } : {}) } } : {}),
    onEvent,
    ...(workers > 1 ? { workers } : {}),
  });
  let tstun: TstunServer | undefined;
  if (values.tstun !== undefined) {
    try {
      // An empty value (a bare --tstun) means the default, [::]:3477.
      tstun = await startTstunServer({ listen: values.tstun, onEvent: onTstunEvent });
    } catch (err) {
      await server.close();
      throw err;
    }
    const t = tstun;
    if (registry) metricsModule?.registerTstunMetrics(registry, () => t.stats);
  }
  log.info(
    {
      event: 'listening',
      udp: endpointKey(server.address),
      alternateUdp: server.alternateAddress ? endpointKey(server.alternateAddress) : null,
      tcp: server.tcpAddress ? endpointKey(server.tcpAddress) : null,
      tstunTcp: tstun ? endpointKey(tstun.address) : null,
      metrics: server.metricsAddress ? `http://${endpointKey(server.metricsAddress)}/metrics` : null,
      workers: server.workerPids.length,
      networks: secrets.length,
    },
    'listening',
  );
  const secretFile = values['secret-file'];
  const onHup = (): void => {
    if (secretFile === undefined) {
      log.warn({ event: 'reload' }, 'SIGHUP ignored: secrets came from the command line or environment, not a file');
      return;
    }
    readSecretFile(secretFile).then(
      (next) => {
        server.setSecrets(next);
        log.info({ event: 'reload', networks: next.length }, 'secret file reloaded');
      },
      (err: unknown) => {
        log.error({ event: 'reload', error: err instanceof Error ? err.message : String(err) }, 'secret reload failed; keeping the old secrets');
      },
    );
  };
  process.on('SIGHUP', onHup);
  await new Promise<void>((resolve) => {
    if (io.signal.aborted || workerFailed.signal.aborted) resolve();
    for (const signal of [io.signal, workerFailed.signal]) {
      signal.addEventListener('abort', () => {
        resolve();
      }, { once: true });
    }
  });
  process.off('SIGHUP', onHup);
  await Promise.all([server.close(), tstun?.close()]);
  const s = server.stats;
  log.info({ event: 'stopped', registrationsTotal: s.registrationsTotal, introductions: s.introductions, stunBindings: s.stunBindings, tstunPairs: tstun?.stats.pairs ?? null }, 'stopped');
  return workerFailed.signal.aborted ? 1 : 0;
}

/** The same checks startServer makes, for --check, which binds nothing. */
function checkListen(text: string): void {
  const parsed = parseHostPort(text, 3478);
  if (!parsed.ok) throw BurrowError.usage(`--listen "${text}" is not HOST:PORT (${parsed.reason})`);
  if (parsed.host !== '' && !normaliseAddress(parsed.host)) throw BurrowError.usage(`--listen host "${parsed.host}" is not an IP address`);
}

/**
 * parseArgs cannot express an option whose value is optional: a bare `flag` (last, or followed by
 * another option) becomes `flag=`, which the option's handler reads as "the default".
 */
function withOptionalValue(argv: string[], flag: string): string[] {
  return argv.map((arg, i) => (arg === flag && (argv[i + 1] === undefined || argv[i + 1]?.startsWith('-') === true) ? `${flag}=` : arg));
}
