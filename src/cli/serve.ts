/** `burrow serve`: the rendezvous server, with structured logs, clean shutdown and secret reload. */
import { endpointKey, normaliseAddress, parseHostPort } from '../codec/address.js';
import { readSecretFile } from '../node/secret.js';
import { startServer, type RelayServerOptions } from '../node/server.js';
import type { RelayLimits } from '../server/relay/config.js';
import type { RelayEvent } from '../server/relay/core.js';
import { readFileSync } from 'node:fs';
import { startTstunServer, type TstunServer, type TstunServerEvent } from '../node/tstun.js';
import type { ServerEvent } from '../server/core.js';
import { resolveSecrets, type Io } from './common.js';
import { AuthFailureLog, isAuthFailure, textDestination } from './log.js';
import { usageError } from './parse.js';
import type { Parsed } from './schema.js';

const TSTUN_PORT = 3477;

/** How often failed authentications are summed up in the log (one line per source). */
export const AUTH_LOG_INTERVAL_MS = 5000;

/** A socket `serve` would open, for the clash checks. */
interface Socket {
  readonly transport: 'udp' | 'tcp';
  readonly host: string;
  readonly port: number;
  /** What it is, in the CLI's words. */
  readonly what: string;
}

export interface ServePlan {
  readonly listen: string;
  readonly alternatePort: number | false;
  /** The second IP address (RFC 5780), normalised. */
  readonly alternateAddress: string | undefined;
  readonly tstun: string | undefined;
  readonly metrics: string | undefined;
  readonly workers: number;
  readonly sockets: readonly Socket[];
  readonly relay: RelayPlan;
}

/** The relay as the flags ask for it (the TURN secret is read at start). */
export interface RelayPlan {
  readonly mode: 'builtin' | 'off' | 'turn';
  /** Set when --workers turned the built-in relay off. */
  readonly offForWorkers: boolean;
  readonly turnUrl: string | undefined;
  readonly turnSecretFile: string | undefined;
  readonly turnTtlSeconds: number;
  readonly limits: Partial<RelayLimits>;
  readonly ports: readonly [number, number] | undefined;
  readonly externalAddress: string | undefined;
  readonly openChallenge: boolean;
}

/** `16MiB`, `512KiB`, `1GiB`, `1000000`: bytes. */
export function parseBytes(flag: string, text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(|K|KiB|M|MiB|G|GiB|B)$/i.exec(text.trim());
  if (!m) throw usageError(`--${flag} "${text}" is not a number of bytes`, `e.g. --${flag} 16MiB (suffixes KiB, MiB, GiB)`);
  const unit = (m[2] ?? '').toLowerCase();
  const scale = unit.startsWith('k') ? 1024 : unit.startsWith('m') ? 1024 ** 2 : unit.startsWith('g') ? 1024 ** 3 : 1;
  const n = Math.floor(Number(m[1]) * scale);
  if (n < 1) throw usageError(`--${flag} "${text}" is less than one byte per second`, `e.g. --${flag} 16MiB`);
  return n;
}

/** `turn:HOST:PORT` (RFC 7065; port 3478 when left out; `?transport=udp` allowed). */
export function checkTurnUrl(text: string): string {
  const m = /^turn:(\[[0-9a-fA-F:.]+\]|[^:?[\]]+)(?::(\d{1,5}))?(\?transport=udp)?$/.exec(text);
  const port = m?.[2] !== undefined ? Number(m[2]) : 3478;
  if (!m || port < 1 || port > 65535) {
    throw usageError(`--turn "${text}" is not a TURN URL`, 'give turn:HOST:PORT, e.g. --turn turn:turn.example.net:3478 (UDP; turns: and TCP are not supported)');
  }
  return text;
}

function planRelay(values: Parsed<'serve'>['values'], workers: number): RelayPlan {
  const turnUrl = values.turn === undefined ? undefined : checkTurnUrl(values.turn);
  if (turnUrl !== undefined && values['turn-secret-file'] === undefined) {
    throw usageError('--turn needs --turn-secret-file', 'give the file that holds coturn\'s --static-auth-secret: --turn-secret-file FILE');
  }
  if (turnUrl === undefined && values['turn-secret-file'] !== undefined) {
    throw usageError('--turn-secret-file is only used with --turn', 'give --turn turn:HOST:PORT, or leave out --turn-secret-file');
  }
  const asked = turnUrl !== undefined ? 'turn' : values.relay === false || values.relay === 'off' ? 'off' : 'builtin';
  if (asked === 'builtin' && values.relay === 'builtin' && workers > 1) {
    throw usageError(`the built-in relay runs in one process, not with --workers ${workers}`, 'use --turn turn:HOST:PORT with coturn as the relay, or --no-relay, or --workers 1');
  }
  // By default, --workers N > 1 serves without the built-in relay (logged at start).
  const mode = asked === 'builtin' && workers > 1 ? 'off' : asked;
  let ports: [number, number] | undefined;
  const rp = values['relay-ports'];
  if (rp !== undefined) {
    const m = /^(\d{1,5})-(\d{1,5})$/.exec(rp);
    const low = Number(m?.[1]);
    const high = Number(m?.[2]);
    if (!m || low < 1024 || high > 65535 || low > high) throw usageError(`--relay-ports "${rp}" is not a port range LOW-HIGH within 1024-65535`, 'e.g. --relay-ports 49152-65535');
    ports = [low, high];
  }
  const ra = values['relay-address'];
  const externalAddress = ra === undefined ? undefined : normaliseAddress(ra);
  if (ra !== undefined && externalAddress === undefined) throw usageError(`--relay-address "${ra}" is not an IP address`, 'e.g. --relay-address 203.0.113.7');
  return {
    mode,
    offForWorkers: asked === 'builtin' && mode === 'off',
    turnUrl,
    turnSecretFile: values['turn-secret-file'],
    turnTtlSeconds: values['turn-ttl'],
    limits: {
      sessions: values['relay-sessions'],
      sessionsPerPeer: values['relay-sessions-per-peer'],
      sessionsPerSource: values['relay-sessions-per-source'],
      rateBytesPerSecond: parseBytes('relay-rate', values['relay-rate']),
      totalRateBytesPerSecond: parseBytes('relay-total-rate', values['relay-total-rate']),
      idleSeconds: values['relay-idle'],
      maxLifetimeSeconds: Math.max(values['relay-lifetime'], 600),
    },
    ports,
    externalAddress,
    openChallenge: values['relay-open-challenge'],
  };
}

/** coturn's --static-auth-secret: the first non-empty line of the file. */
function readTurnSecret(path: string): Uint8Array {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw usageError(`cannot read --turn-secret-file ${path} (${(err as NodeJS.ErrnoException).code ?? String(err)})`, 'give the file that holds coturn\'s --static-auth-secret');
  }
  const line = text.split(/\r?\n/).map((l) => l.trim()).find((l) => l.length > 0);
  if (line === undefined) throw usageError(`--turn-secret-file ${path} is empty`, 'put coturn\'s --static-auth-secret on its first line');
  return Buffer.from(line, 'utf8');
}

function relayOptions(plan: RelayPlan, onEvent: (e: RelayEvent) => void): RelayServerOptions {
  const policy: RelayServerOptions['policy'] = plan.mode === 'turn' && plan.turnUrl !== undefined && plan.turnSecretFile !== undefined
    ? { kind: 'turn', url: plan.turnUrl, secret: readTurnSecret(plan.turnSecretFile), ttlSeconds: plan.turnTtlSeconds }
    : plan.mode === 'builtin' ? { kind: 'builtin' } : { kind: 'none' };
  return {
    policy,
    limits: plan.limits,
    ...(plan.ports ? { ports: plan.ports } : {}),
    ...(plan.externalAddress !== undefined ? { externalAddress: plan.externalAddress } : {}),
    ...(plan.openChallenge ? { openChallenge: true } : {}),
    onEvent,
  };
}

function hostOf(text: string, fallback: string): { host: string; port: number } {
  const parsed = parseHostPort(text);
  if (!parsed.ok) throw usageError(`"${text}" is not ADDRESS:PORT (${parsed.reason})`, 'e.g. 0.0.0.0:3478');
  return { host: parsed.host === '' ? fallback : normaliseAddress(parsed.host) ?? parsed.host, port: parsed.port };
}

function overlaps(a: Socket, b: Socket): boolean {
  if (a.transport !== b.transport || a.port !== b.port || a.port === 0) return false;
  const wild = (h: string): boolean => h === '::' || h === '0.0.0.0';
  if (a.host === b.host) return true;
  // [::] is dual-stack: it covers IPv4 too; 0.0.0.0 covers every IPv4 address.
  if (a.host === '::' || b.host === '::') return true;
  return (wild(a.host) && !b.host.includes(':')) || (wild(b.host) && !a.host.includes(':'));
}

/**
 * Every address and port `serve` will open, worked out and checked the way a real start would: the
 * alternate port is the --listen port + 1 unless given, and no two sockets of one protocol may share a
 * port. `--check` and a real start both go through this.
 */
export function planServe(values: Parsed<'serve'>['values']): ServePlan {
  const listen = values.listen;
  const main = hostOf(listen, '::');
  const sockets: Socket[] = [
    { transport: 'udp', ...main, what: '--listen (UDP)' },
    { transport: 'tcp', ...main, what: '--listen (TCP rendezvous, the same port as UDP)' },
  ];
  let alternatePort: number | false;
  const alt = values['alt-port'];
  if (alt === false) alternatePort = false;
  else if (alt !== undefined) alternatePort = alt;
  else {
    alternatePort = main.port === 0 ? 0 : main.port + 1;
    if (alternatePort > 65535) {
      throw usageError(`the alternate port would be ${alternatePort} (the --listen port ${main.port} + 1), which is out of range`, 'give --alt-port PORT, or --no-alt-port');
    }
  }
  if (alternatePort !== false) sockets.push({ transport: 'udp', host: main.host, port: alternatePort, what: values['alt-port'] !== undefined ? '--alt-port' : `the alternate port (the --listen port ${main.port} + 1)` });
  let alternateAddress: string | undefined;
  if (values['alt-address'] !== undefined) {
    alternateAddress = checkAltAddress(values['alt-address'], main.host, alternatePort, values.workers);
    sockets.push({ transport: 'udp', host: alternateAddress, port: main.port, what: '--alt-address (on the --listen port)' });
    if (alternatePort !== false) sockets.push({ transport: 'udp', host: alternateAddress, port: alternatePort, what: '--alt-address (on the alternate port)' });
  }
  let tstun: string | undefined;
  if (values.tstun !== undefined) {
    tstun = values.tstun === true ? `[::]:${TSTUN_PORT}` : values.tstun;
    const t = parseHostPort(tstun, TSTUN_PORT);
    if (t.ok) sockets.push({ transport: 'tcp', host: t.host === '' ? '::' : normaliseAddress(t.host) ?? t.host, port: t.port, what: '--tstun' });
  }
  if (values.metrics !== undefined) sockets.push({ transport: 'tcp', ...hostOf(values.metrics, '::'), what: '--metrics' });
  for (let i = 0; i < sockets.length; i++) {
    for (let j = i + 1; j < sockets.length; j++) {
      const a = sockets[i];
      const b = sockets[j];
      if (a && b && overlaps(a, b)) {
        throw usageError(
          `${b.what} and ${a.what} would both use ${b.transport.toUpperCase()} port ${b.port}`,
          a.what.startsWith('--listen') && b.what.startsWith('the alternate')
            ? 'give --alt-port another port, or --no-alt-port'
            : `give ${b.what.startsWith('--') ? b.what.split(' ')[0] ?? b.what : '--alt-port'} another port`,
        );
      }
    }
  }
  if (values.workers > 256) throw usageError(`--workers ${values.workers} is more than 256`, 'one process per core is plenty: e.g. --workers 2');
  if (values.redis !== undefined && !/^rediss?:\/\//.test(values.redis)) throw usageError(`--redis "${values.redis}" is not a Redis URL`, 'e.g. --redis redis://127.0.0.1:6379/0');
  if (values['server-id'] !== undefined && !/^[A-Za-z0-9._-]{1,64}$/.test(values['server-id'])) throw usageError(`--server-id "${values['server-id']}" is not 1 to 64 letters, digits, ".", "_" or "-"`, 'e.g. --server-id fra-1');
  return { listen, alternatePort, alternateAddress, tstun, metrics: values.metrics, workers: values.workers, sockets, relay: planRelay(values, values.workers) };
}

/** --alt-address: a second IP of this host, for RFC 5780 answers (2 IPs × 2 ports). */
function checkAltAddress(text: string, mainHost: string, alternatePort: number | false, workers: number): string {
  const other = normaliseAddress(text);
  if (!other) throw usageError(`--alt-address "${text}" is not an IP address`, 'give a second address of this host, e.g. --alt-address 203.0.113.2');
  if (mainHost === '::' || mainHost === '0.0.0.0') {
    throw usageError('--alt-address needs a specific --listen address: every answer names the address it leaves from', 'e.g. --listen 203.0.113.1:3478 --alt-address 203.0.113.2');
  }
  if (other.includes(':') !== mainHost.includes(':')) throw usageError(`--alt-address ${other} and --listen ${mainHost} are of different IP families`, 'give two IPv4 or two IPv6 addresses');
  if (other === mainHost) throw usageError('--alt-address is the --listen address', 'give a second address of this host');
  if (alternatePort === false) throw usageError('--alt-address needs the alternate port (RFC 5780 uses 2 IPs × 2 ports)', 'drop --no-alt-port');
  if (workers > 1) throw usageError('--alt-address cannot be combined with --workers yet', 'run with --workers 1 (the default)');
  return other;
}

export async function serveCommand(parsed: Parsed<'serve'>, io: Io): Promise<number> {
  const { values } = parsed;
  const plan = planServe(values);
  const format = values['log-format'];
  const level = values.quiet ? 'error' : values['log-level'];
  // prom-client is loaded only with --metrics.
  const metricsModule = plan.metrics !== undefined ? await import('../node/metrics.js') : undefined;
  if (plan.metrics !== undefined) metricsModule?.parseMetricsListen(plan.metrics);
  const secretsFromEnv = parsed.sources['secret-file'] === 'env';
  if (values.check) {
    const secrets = await resolveSecrets(io, values, secretsFromEnv);
    if (plan.relay.mode === 'turn') relayOptions(plan.relay, () => undefined); // reads the TURN secret file
    // A dry run for service managers and deploy scripts (`ExecStartPre=burrow serve --check ...`): every option,
    // the secret file and the ports' clashes are checked; nothing is bound.
    const opens = plan.sockets.map((s) => `${s.transport.toUpperCase()} ${s.host.includes(':') ? `[${s.host}]` : s.host}:${s.port} (${s.what})`).join(', ');
    const relayLine = plan.relay.mode === 'builtin'
      ? `relay: built-in (TURN on the --listen UDP port, relayed UDP ports ${plan.relay.ports ? `${plan.relay.ports[0]}-${plan.relay.ports[1]}` : 'picked by the kernel'}; streams on the TCP port)`
      : plan.relay.mode === 'turn' ? `relay: ${plan.relay.turnUrl ?? ''} (coturn; the built-in relay is off)` : `relay: none${plan.relay.offForWorkers ? ` (the built-in relay does not run with --workers ${plan.workers})` : ''}`;
    io.stdout.write(`burrow serve: options and ${secrets.length} secret${secrets.length === 1 ? '' : 's'} OK; not started (--check)\n` +
      `would open: ${opens}; ports held by another program show only at a real start\n${relayLine}\n`);
    return 0;
  }
  // pino is loaded here only, so `burrow punch` starts fast.
  const { pino } = await import('pino');
  const destination = format === 'json' ? pino.destination({ dest: 2, sync: true }) : textDestination(io.stderr);
  const log = pino({ level, base: { pid: process.pid } }, destination);
  // Warnings about the secrets go to the log, so that a JSON log stays JSON.
  const secrets = await resolveSecrets(io, values, secretsFromEnv, (line) => { log.warn({ event: 'secret' }, line); });
  // Failed authentications: one warning per source per interval, with a count (a flood cannot fill the disk).
  const authFailures = new AuthFailureLog();
  const flushAuthFailures = (): void => {
    const { sources, others } = authFailures.flush();
    const seconds = AUTH_LOG_INTERVAL_MS / 1000;
    for (const s of sources) {
      log.warn({ event: 'auth-failures', from: s.from, count: s.count, reasons: s.reasons, seconds }, `authentication failed ${s.count} time${s.count === 1 ? '' : 's'} from ${s.from} (a client with another network secret, or forged traffic)`);
    }
    if (others) log.warn({ event: 'auth-failures', from: 'others', count: others.count, sources: others.sources, seconds }, `authentication failed ${others.count} times from ${others.sources} more sources`);
  };
  const authTimer = setInterval(flushAuthFailures, AUTH_LOG_INTERVAL_MS);
  authTimer.unref();
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
        if (isAuthFailure(e.reason)) authFailures.add(e.from.address, e.reason);
        log.debug({ event: e.type, from: endpointKey(e.from), reason: e.reason }, 'datagram rejected');
        break;
      case 'wg-endpoint':
        log.info({ event: e.type, network: e.network, key: e.key, endpoint: endpointKey(e.endpoint) }, 'WireGuard endpoint learnt');
        break;
      case 'partner-unreachable':
        log.info({ event: e.type, network: e.network, peer: e.name, server: e.server }, 'partner\'s server is gone; treated as absent');
        break;
      case 'displaced':
        if (e.refused) log.info({ event: e.type, network: e.network, peer: e.name }, 'refresh of a replaced session refused (409)');
        else log.info({ event: e.type, network: e.network, peer: e.name }, 'a new session took the name; the old one was told');
        break;
      case 'partner-left':
        log.info({ event: e.type, network: e.network, peer: e.name, partner: e.partner }, 'peer left before a path; its waiting partner was told');
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
  const onRelayEvent = (e: RelayEvent): void => {
    switch (e.type) {
      case 'relay-allocated':
        log.info({ event: e.type, network: e.network, peer: e.name, partner: e.peer, from: endpointKey(e.client), relayed: endpointKey(e.relayed) }, 'relay session started');
        break;
      case 'relay-released':
        log.info({ event: e.type, network: e.network, peer: e.name, partner: e.peer, reason: e.reason, bytes: e.bytes }, 'relay session ended');
        break;
      case 'relay-refused':
        log.debug({ event: e.type, from: endpointKey(e.from), reason: e.reason, detail: e.detail }, 'relay allocation refused');
        break;
      case 'relay-forbidden':
        log.warn({ event: e.type, network: e.network, peer: e.name, partner: e.peer, address: endpointKey(e.address) }, 'relay permission refused: not the partner\'s address');
        break;
    }
  };
  const relay = relayOptions(plan.relay, onRelayEvent);
  if (plan.relay.offForWorkers) log.warn({ event: 'relay-off' }, `no built-in relay with --workers ${plan.workers} (it runs in one process): pairs without a direct path fail; use --turn with coturn as the relay`);
  const registry = metricsModule?.createProcessRegistry();
  let server;
  try {
    server = await startServer({
      listen: plan.listen,
      secrets,
      alternatePort: plan.alternatePort,
      ...(plan.alternateAddress !== undefined ? { alternateAddress: plan.alternateAddress } : {}),
      ...(plan.metrics !== undefined ? { metrics: { listen: plan.metrics, ...(registry ? { registry } : {}) } } : {}),
      onEvent,
      ...(plan.workers > 1 ? { workers: plan.workers } : {}),
      relay,
      ...(values['server-id'] !== undefined ? { serverId: values['server-id'] } : {}),
      ...(values.redis !== undefined
        ? {
            redis: {
              url: values.redis,
              prefix: values['redis-prefix'],
              onStatus: (status: 'down' | 'up', detail: string) => {
                if (status === 'down') log.error({ event: 'store-down', reason: detail }, 'lost the Redis store: registrations are refused (503) until it is back; STUN is still answered');
                else log.info({ event: 'store-up', url: detail }, 'Redis store reachable');
              },
            },
          }
        : {}),
    });
  } catch (err) {
    clearInterval(authTimer);
    throw err;
  }
  let tstun: TstunServer | undefined;
  if (plan.tstun !== undefined) {
    try {
      tstun = await startTstunServer({ listen: plan.tstun, onEvent: onTstunEvent });
    } catch (err) {
      clearInterval(authTimer);
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
      ...(server.rfc5780 ? { otherAddressUdp: [endpointKey(server.rfc5780['other-ip']), endpointKey(server.rfc5780['other-ip-port'])] } : {}),
      tcp: server.tcpAddress ? endpointKey(server.tcpAddress) : null,
      tstunTcp: tstun ? endpointKey(tstun.address) : null,
      metrics: server.metricsAddress ? `http://${endpointKey(server.metricsAddress)}/metrics` : null,
      workers: server.workerPids.length,
      networks: secrets.length,
      relay: plan.relay.mode === 'turn' ? plan.relay.turnUrl : plan.relay.mode,
      serverId: server.serverId,
      // The store, when shared (its password never logged).
      redis: values.redis !== undefined ? values.redis.replace(/\/\/([^@/]*:)[^@/]*@/, '//$1***@') : null,
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
  clearInterval(authTimer);
  flushAuthFailures();
  const s = server.stats;
  log.info({ event: 'stopped', registrationsTotal: s.registrationsTotal, introductions: s.introductions, stunBindings: s.stunBindings, tstunPairs: tstun?.stats.pairs ?? null }, 'stopped');
  return workerFailed.signal.aborted ? 1 : 0;
}

