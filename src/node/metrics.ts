/**
 * The Prometheus endpoint of the rendezvous server: an HTTP listener that answers `GET /metrics` in the
 * text exposition format, through prom-client. Every Burrow value is read from the server's counters
 * (ServerStats) when Prometheus scrapes (`collect`), so the packet path pays nothing for metrics beyond
 * the integer increments it always made. Each metric is described in docs/metrics.md.
 *
 * The listener binds exactly the address it is given and nothing else; it is meant for a loopback or
 * management address, never the public one (the counters tell an observer how busy the server is).
 */
import http from 'node:http';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import { normaliseAddress, parseHostPort, type Endpoint } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import type { WgStats } from '../server/wg.js';
import type { ServerStats } from '../server/core.js';
import type { TstunStats } from '../server/tstun.js';
import type { RelayStats } from '../server/relay/core.js';

export interface MetricsOptions {
  /** `HOST:PORT` for the HTTP listener; HOST is an IP address (e.g. `127.0.0.1:9464`), port 0 for any free port. */
  readonly listen: string;
  /**
   * The registry Burrow's metrics join, e.g. one from `createProcessRegistry()` or the caller's own;
   * default a new, empty one. Registering twice on one registry fails (duplicate metric names).
   */
  readonly registry?: Registry;
}

/** What the server's metrics are read from, at scrape time. */
export interface ServerMetricsSource {
  readonly stats: Readonly<ServerStats>;
  readonly registrations: number;
  readonly tcpConnections: number;
  readonly networks: number;
  /** WireGuard endpoint discovery (src/server/wg.ts): interfaces known and the responder's counters. */
  readonly wireguard?: { readonly interfaces: number; readonly stats: Readonly<WgStats> };
  /** The built-in relay (src/server/relay), when this process runs it, and the stream relay. */
  readonly relay?: RelayMetricsSource;
}

/** What the relay metrics are read from: the UDP relay (TURN) and the stream relay (TCP splice). */
export interface RelayMetricsSource {
  readonly udpSessions: number;
  readonly udp: Readonly<RelayStats>;
  readonly streamSessions: number;
  readonly stream: Readonly<{ sessionsTotal: number; bytesRelayed: number; refused: Readonly<Record<string, number>> }>;
}

export interface MetricsEndpoint {
  readonly address: Endpoint;
  readonly registry: Registry;
  /** Stops listening and drops open scrape connections. Idempotent. */
  close(): Promise<void>;
}

/** Bounds for the HTTP listener: a scraper needs one connection and answers within milliseconds. */
const MAX_CONNECTIONS = 16;
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * Checks a `--metrics` value: an IP address and an explicit port. A bare port is refused on purpose, so
 * the listener never ends up on every address by accident.
 */
export function parseMetricsListen(text: string): { host: string; port: number } {
  const parsed = parseHostPort(text);
  if (!parsed.ok) throw BurrowError.invalidOption('metrics', `not HOST:PORT (${parsed.reason})`, text);
  if (parsed.host === '') throw BurrowError.invalidOption('metrics', 'no address: the metrics must not listen on every address by accident', text);
  const host = normaliseAddress(parsed.host);
  if (!host) throw BurrowError.invalidOption('metrics', `host "${parsed.host}" is not an IP address`, text);
  return { host, port: parsed.port };
}

/**
 * A registry with prom-client's process metrics (CPU, memory, heap, file descriptors, event-loop delay,
 * GC), prefixed `burrow_`. Once per process: the GC observer and the event-loop delay monitor it
 * installs stay for the life of the process. `burrow serve --metrics` uses it.
 */
export function createProcessRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'burrow_' });
  return registry;
}

/** A counter whose value is read at scrape time. */
function counter(registry: Registry, name: string, help: string, read: () => number): void {
  new Counter({
    name, help, registers: [registry],
    collect() {
      this.reset();
      this.inc(read());
    },
  });
}

/** A counter with one label, whose values (one per label value) are read at scrape time. */
function labelledCounter(registry: Registry, name: string, help: string, label: string, read: () => Record<string, number>): void {
  new Counter({
    name, help, labelNames: [label], registers: [registry],
    collect() {
      this.reset();
      for (const [value, n] of Object.entries(read())) this.inc({ [label]: value }, n);
    },
  });
}

function gauge(registry: Registry, name: string, help: string, read: () => number): void {
  new Gauge({
    name, help, registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

/** Adds the rendezvous server's metrics to `registry`. */
export function registerServerMetrics(registry: Registry, source: ServerMetricsSource): void {
  const s = (): Readonly<ServerStats> => source.stats;
  gauge(registry, 'burrow_registrations', 'Registrations held now in the in-memory store (UDP and TCP), expired ones included until the next sweep (at most 1 s).', () => source.registrations);
  gauge(registry, 'burrow_tcp_connections', 'Open TCP rendezvous connections.', () => source.tcpConnections);
  gauge(registry, 'burrow_networks', 'Networks served: one per accepted secret (changes on SIGHUP reload).', () => source.networks);
  counter(registry, 'burrow_registrations_total', 'Registrations started: a REGISTER with a new name or a new session nonce.', () => s().registrationsNew);
  counter(registry, 'burrow_register_requests_total', 'Authenticated REGISTER requests accepted, refreshes included.', () => s().registrationsTotal);
  counter(registry, 'burrow_introductions_total', 'Introductions pushed to a waiting peer (a pair, or a pair re-introduced after a change).', () => s().introductions);
  counter(registry, 'burrow_introductions_partner_gone_total', 'Introductions not made because the partner\'s server no longer listens (the partner counts as absent).', () => s().partnersUnreachable);
  counter(registry, 'burrow_registrations_displaced_total', 'Registrations that replaced a live registration of another session under the same name.', () => s().registrationsDisplaced);
  counter(registry, 'burrow_registrations_refused_total', 'Refreshes answered 409: a newer session had taken the name (the old peer is told it was replaced).', () => s().registrationsRefused);
  counter(registry, 'burrow_withdrawals_total', 'Registrations withdrawn by their peer before a path: its timeout, an interrupt or an error.', () => s().withdrawals);
  counter(registry, 'burrow_partners_told_left_total', 'Waiting peers told that their partner withdrew or closed its connection (NOTICE partner-left).', () => s().partnersToldLeft);
  counter(registry, 'burrow_store_errors_total', 'Requests to the shared state (registrations, replay guard, router, WireGuard registry) that failed or timed out.', () => s().storeErrors);
  counter(registry, 'burrow_store_busy_drops_total', 'Authenticated requests dropped because too many requests to the shared state were in flight.', () => s().storeBusy);
  labelledCounter(registry, 'burrow_introduction_outcomes_total', 'Outcome reports from introduced peers: one per peer and punch attempt.', 'outcome', () => ({
    connected: s().outcomesConnected,
    failed: s().outcomesFailed,
  }));
  counter(registry, 'burrow_outcome_reports_unmatched_total', 'Authenticated outcome reports that matched no current registration (already reported, expired or evicted).', () => s().outcomesUnmatched);
  counter(registry, 'burrow_stun_binding_requests_total', 'STUN Binding requests received (UDP main and alternate port, and TCP).', () => s().stunBindings);
  counter(registry, 'burrow_stun_binding_unanswered_total', 'STUN Binding requests left unanswered because the answer would exceed the request: strict mode (answerBareBindings off), or an RFC 5780 answer beyond its source\'s budget.', () => s().stunBindingsUnanswered);
  counter(registry, 'burrow_stun_rfc5780_answers_total', 'STUN Binding answers for RFC 5780 NAT behaviour discovery (with --alt-address), and 420 answers to CHANGE-REQUEST without it.', () => s().stunRfc5780Answers);
  counter(registry, 'burrow_auth_failures_total', 'Messages that failed authentication: unknown network (secret differs) or bad MESSAGE-INTEGRITY-SHA256.', () => s().authFailures);
  counter(registry, 'burrow_stale_timestamps_total', 'Authenticated messages whose TIMESTAMP was outside the accepted window.', () => s().staleTimestamps);
  counter(registry, 'burrow_replays_rejected_total', 'Authenticated messages refused by the replay cache (a replay, or the cache was full).', () => s().replaysRejected);
  counter(registry, 'burrow_malformed_packets_total', 'Messages dropped as malformed: not STUN, not a Burrow message, or a method the server does not take.', () => s().malformed);
  counter(registry, 'burrow_rate_limited_drops_total', 'Messages dropped by the per-source rate limit.', () => s().rateLimited);
  counter(registry, 'burrow_registration_evictions_total', 'Registrations evicted to stay within the registration limit.', () => s().evictions);
  counter(registry, 'burrow_registration_expirations_total', 'Registrations expired without a refresh.', () => s().expirations);
  labelledCounter(registry, 'burrow_received_messages_total', 'Messages received: UDP datagrams, and STUN messages over TCP.', 'transport', () => ({
    udp: s().datagramsIn - s().streamMessagesIn,
    tcp: s().streamMessagesIn,
  }));
  labelledCounter(registry, 'burrow_received_bytes_total', 'Bytes received in those messages (UDP payloads; whole STUN messages over TCP).', 'transport', () => ({
    udp: s().bytesIn - s().streamBytesIn,
    tcp: s().streamBytesIn,
  }));
  labelledCounter(registry, 'burrow_sent_messages_total', 'Messages sent (queued to the socket).', 'transport', () => ({
    udp: s().datagramsOut - s().streamMessagesOut,
    tcp: s().streamMessagesOut,
  }));
  labelledCounter(registry, 'burrow_sent_bytes_total', 'Bytes sent in those messages.', 'transport', () => ({
    udp: s().bytesOut - s().streamBytesOut,
    tcp: s().streamBytesOut,
  }));
  counter(registry, 'burrow_unauthenticated_received_bytes_total', 'Bytes received that did not authenticate (junk, bad MACs, replays, rate-limited, STUN Binding).', () => s().unauthBytesIn);
  if (source.wireguard) {
    const wg = source.wireguard;
    gauge(registry, 'burrow_wg_interfaces', 'WireGuard interfaces the server knows (announced by WG-SYNC or seen handshaking), until they expire.', () => wg.interfaces);
    counter(registry, 'burrow_wg_syncs_total', 'Authenticated WG-SYNC requests answered (burrow wg announcing itself and asking for peers).', () => s().wgSyncs);
    counter(registry, 'burrow_wg_handshakes_total', 'WireGuard handshake initiations answered (each proves an interface key).', () => wg.stats.initiations);
    counter(registry, 'burrow_wg_confirmations_total', 'WireGuard sessions confirmed by a transport packet, i.e. by the network\'s preshared key.', () => wg.stats.confirmations);
    counter(registry, 'burrow_wg_endpoint_changes_total', 'Times an interface\'s public endpoint moved (NAT rebinding, restart).', () => wg.stats.endpointChanges);
    counter(registry, 'burrow_wg_rejected_total', 'WireGuard packets rejected: unknown server key, failed authentication, replays, unknown sessions.', () => wg.stats.rejected);
  }
  if (source.relay) registerRelayMetrics(registry, source.relay);
  counter(registry, 'burrow_unauthenticated_sent_bytes_total', 'Bytes sent in answer to unauthenticated traffic; only STUN Binding answers exceed their requests (by at most 24 bytes each).', () => s().unauthBytesOut);
}

/** Adds the relay's metrics (docs/metrics.md, "Relay"). */
export function registerRelayMetrics(registry: Registry, r: RelayMetricsSource): void {
  new Gauge({
    name: 'burrow_relay_sessions', help: 'Relay sessions now: UDP allocations (TURN) and spliced TCP streams.', labelNames: ['kind'], registers: [registry],
    collect() {
      this.set({ kind: 'udp' }, r.udpSessions);
      this.set({ kind: 'stream' }, r.streamSessions);
    },
  });
  labelledCounter(registry, 'burrow_relay_sessions_total', 'Relay sessions started: UDP allocations made, TCP streams spliced.', 'kind', () => ({ udp: r.udp.allocationsTotal, stream: r.stream.sessionsTotal }));
  labelledCounter(registry, 'burrow_relay_bytes_total', 'Application bytes relayed (each direction counts once; TURN and ChannelData headers not included).', 'kind', () => ({ udp: r.udp.bytesRelayed, stream: r.stream.bytesRelayed }));
  counter(registry, 'burrow_relay_datagrams_total', 'Datagrams relayed by the UDP relay.', () => r.udp.datagramsRelayed);
  labelledCounter(registry, 'burrow_relay_refused_total', 'Relay sessions refused, by reason (UDP Allocate requests and stream relay connections).', 'reason', () => {
    const out: Record<string, number> = { ...r.udp.refused };
    for (const [k, v] of Object.entries(r.stream.refused)) out[`stream-${k}`] = v;
    return out;
  });
  counter(registry, 'burrow_relay_permissions_forbidden_total', 'Relay permissions refused (403) because the address is not the partner\'s.', () => r.udp.permissionsForbidden);
  labelledCounter(registry, 'burrow_relay_dropped_total', 'Relayed datagrams dropped, by reason.', 'reason', () => ({
    rate: r.udp.droppedRate,
    'no-permission': r.udp.droppedNoPermission,
    'too-large': r.udp.droppedTooLarge,
  }));
}

/** Adds the T-STUN matchmaker's metrics (`burrow serve --tstun`) to `registry`. */
export function registerTstunMetrics(registry: Registry, read: () => Readonly<TstunStats>): void {
  gauge(registry, 'burrow_tstun_connections', 'Open T-STUN connections.', () => read().open);
  gauge(registry, 'burrow_tstun_waiting', 'T-STUN clients waiting for a partner.', () => read().waiting);
  counter(registry, 'burrow_tstun_connections_total', 'T-STUN connections accepted, including those turned away at once.', () => read().connections);
  counter(registry, 'burrow_tstun_pairs_total', 'T-STUN clients paired.', () => read().pairs);
  labelledCounter(registry, 'burrow_tstun_rejected_total', 'T-STUN connections turned away, by reason.', 'reason', () => read().rejected);
  labelledCounter(registry, 'burrow_tstun_timed_out_total', 'T-STUN connections timed out, by phase.', 'phase', () => read().timedOut);
  counter(registry, 'burrow_tstun_received_bytes_total', 'Bytes received on T-STUN connections.', () => read().bytesIn);
  counter(registry, 'burrow_tstun_sent_bytes_total', 'Bytes sent on T-STUN connections.', () => read().bytesOut);
}

/**
 * The server's metrics endpoint: Burrow's metrics joined to `options.registry` (or a new one) and served
 * on `options.listen`. If the listener cannot start, the metrics are taken out of the registry again.
 */
export async function startServerMetrics(options: MetricsOptions, source: ServerMetricsSource): Promise<MetricsEndpoint> {
  const registry = options.registry ?? new Registry();
  const before = new Set(registry.getMetricsAsArray().map((m) => m.name));
  try {
    registerServerMetrics(registry, source);
    return await startMetricsEndpoint(options.listen, registry);
  } catch (err) {
    for (const m of registry.getMetricsAsArray()) if (!before.has(m.name)) registry.removeSingleMetric(m.name);
    throw err;
  }
}

/** Serves `registry` at `GET /metrics` on `listen`. */
export async function startMetricsEndpoint(listen: string, registry: Registry): Promise<MetricsEndpoint> {
  const { host, port } = parseMetricsListen(listen);
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('only GET and HEAD\n');
      return;
    }
    if ((req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: the metrics are at /metrics\n');
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': registry.contentType }).end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`cannot collect the metrics: ${err instanceof Error ? err.message : String(err)}\n`);
      },
    );
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = REQUEST_TIMEOUT_MS;
  server.keepAliveTimeout = REQUEST_TIMEOUT_MS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(BurrowError.bindFailed({ transport: 'tcp', address: host, port, role: 'metrics' }, err));
    });
    server.listen({ host, port, ipv6Only: host.includes(':') }, () => {
      server.removeAllListeners('error');
      server.on('error', () => undefined);
      resolve();
    });
  });
  const bound = server.address();
  const address: Endpoint = bound && typeof bound === 'object' ? { address: normaliseAddress(bound.address) ?? bound.address, port: bound.port } : { address: host, port };
  server.on('clientError', (_err, socket) => {
    socket.destroy();
  });
  let closed: Promise<void> | undefined;
  return {
    address,
    registry,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
