/**
 * Counters, read by the metrics endpoint (src/node/metrics.ts, docs/metrics.md) at scrape time and by the tests.
 * Plain integer increments: the packet path pays nothing else for metrics.
 */
export interface ServerStats {
  /** Messages and bytes in and out, UDP and TCP together (the stream* fields are the TCP share). */
  datagramsIn: number;
  bytesIn: number;
  datagramsOut: number;
  bytesOut: number;
  streamMessagesIn: number;
  streamBytesIn: number;
  streamMessagesOut: number;
  streamBytesOut: number;
  /** Bytes received from and sent to sources whose traffic did not authenticate (incl. STUN Binding). */
  unauthBytesIn: number;
  unauthBytesOut: number;
  stunBindings: number;
  /**
   * Binding requests left unanswered because the answer would be longer than the request: `answerBareBindings` is off
   * (strict mode), or (RFC 5780 answers) the source's per-source budget for them is spent.
   */
  stunBindingsUnanswered: number;
  /** Binding answers with RFC 5780 attributes or from another socket (`--alt-address`), and 420s to CHANGE-REQUEST. */
  stunRfc5780Answers: number;
  /** Authenticated REGISTER requests accepted, refreshes included. */
  registrationsTotal: number;
  /** Of those, the ones that started a registration: a new name, or a new session (nonce) of a name. */
  registrationsNew: number;
  /** Of those, the ones that replaced a live registration of another session under the same name. */
  registrationsDisplaced: number;
  /** Refreshes refused (409) because a newer session had taken the name. */
  registrationsRefused: number;
  /** Registrations withdrawn by their peer with outcome `withdrawn` (ended before a path: timeout, interrupt, error). */
  withdrawals: number;
  /** Waiting partners told (NOTICE partner-left) that the peer they waited for withdrew or closed its connection. */
  partnersToldLeft: number;
  introductions: number;
  /** Introductions not made because the partner's server did not take the push (the partner is gone). */
  partnersUnreachable: number;
  /** Outcome reports from introduced peers (one per peer and attempt), and reports that matched no registration. */
  outcomesConnected: number;
  outcomesFailed: number;
  outcomesUnmatched: number;
  authFailures: number;
  staleTimestamps: number;
  replaysRejected: number;
  malformed: number;
  rateLimited: number;
  evictions: number;
  /** Registrations that expired without a refresh; counted by the in-memory store (src/server/store.ts). */
  expirations: number;
  /** Authenticated WG-SYNC exchanges answered. */
  wgSyncs: number;
  /** Requests to the shared state that failed or timed out, and requests dropped because too many were in flight. */
  storeErrors: number;
  storeBusy: number;
}

export function emptyStats(): ServerStats {
  return {
    datagramsIn: 0, bytesIn: 0, datagramsOut: 0, bytesOut: 0,
    streamMessagesIn: 0, streamBytesIn: 0, streamMessagesOut: 0, streamBytesOut: 0, unauthBytesIn: 0, unauthBytesOut: 0,
    stunBindings: 0, stunBindingsUnanswered: 0, stunRfc5780Answers: 0, registrationsTotal: 0, registrationsNew: 0, registrationsDisplaced: 0,
    registrationsRefused: 0, withdrawals: 0, partnersToldLeft: 0, introductions: 0, partnersUnreachable: 0, outcomesConnected: 0, outcomesFailed: 0, outcomesUnmatched: 0, authFailures: 0,
    staleTimestamps: 0, replaysRejected: 0, malformed: 0, rateLimited: 0, evictions: 0, expirations: 0, wgSyncs: 0,
    storeErrors: 0, storeBusy: 0,
  };
}

/** Sums counters (the processes of one server). */
export function sumStats(all: readonly Readonly<ServerStats>[]): ServerStats {
  const total = emptyStats();
  const keys = Object.keys(total) as (keyof ServerStats)[];
  for (const s of all) for (const k of keys) total[k] += s[k];
  return total;
}

/** Sizes of the server's state (docs/protocol.md section 6 gives the bounds). */
export interface ServerState {
  readonly registrations: number;
  readonly pendingPushes: number;
  /** TCP connections that registered something. */
  readonly tcpConnections: number;
  readonly replayEntries: number;
  readonly replayBytes: number;
  /** WireGuard interface records (the registry) and handshake sessions (the responder). */
  readonly wgInterfaces: number;
  readonly wgSessions: number;
  /** Requests to the shared state in flight. */
  readonly pendingEffects: number;
}
