/**
 * The rendezvous server's protocol core: sans-IO, with the same shape as the client machines — `handle(input)`
 * returns actions, `nextTimeoutAt()` says when to call it with a `timer` input. No sockets, no timers, no clock,
 * no randomness of its own (all injected). This file only dispatches; each concern has its own file:
 *
 *   auth-gate.ts      network → MAC → timestamp → replay, once for REGISTER, REPORT and WG-SYNC
 *   binding.ts        STUN Binding answers and their amplification bound
 *   rendezvous.ts     REGISTER, REPORT, pushes to the partner's owner, TCP connections closing
 *   introductions.ts  pairing as pure functions
 *   pushes.ts         unacknowledged introductions and their re-sends
 *   channels.ts       answering on UDP and TCP; the registrations of each TCP connection
 *   wg-sync.ts / wg.ts  WireGuard packets (the handshake responder) and WG-SYNC
 *   effects.ts        requests to the shared state waiting for their answers
 *
 * Theory of operation.
 *
 * Order of checks for every datagram, cheapest first, so that junk costs almost nothing and creates no state:
 * per-source rate limit (a fixed table) → STUN framing → method → [auth gate: network id → MAC → timestamp →
 * replay] → the request's own work. A reply to anything that did not authenticate is never longer than what it
 * answers, except the minimal answer to a Binding request, bounded per source (binding.ts, docs/protocol.md §5).
 *
 * Shared state. Registrations, the replay guard, the push router and the WireGuard registry are not the core's:
 * they belong to every process and server of a deployment (src/server/shared.ts), and may live in another process
 * or in Redis, so asking them is asynchronous. The core does not await them. It emits each request as an `effect`
 * action with a ticket, keeps a continuation for it (effects.ts: bounded in number, failed after a deadline), and
 * resumes when the answer comes back as an `effect-done` input. The first effect of an authenticated request carries
 * its replay guard, so that "fresh?" and the request's work are one step (auth-gate.ts). Why effects as actions
 * rather than awaiting inside the core:
 *  - the core stays synchronous and deterministic: a test decides exactly when, and in which order, answers arrive,
 *    so races between two servers (two partners registering at once, a push racing a withdrawal) are ordinary
 *    fake-clock tests, and a store that never answers is a timer, not a hung promise;
 *  - everything in flight is bounded and visible (`pendingEffects`), and a store outage has one place to surface
 *    (an authenticated 503, `storeErrors`);
 *  - the executor decides how to answer: src/server/machine.ts answers in-memory effects at once, within the same
 *    `handle` call (a single process pays no promise per request, and the whole server can be driven
 *    synchronously, as the client simulator does), and hands asynchronous ones (IPC, Redis) back later.
 *
 * A REGISTER therefore takes one or two round trips to the shared state — the guarded, atomic
 * register-and-find-partner and, for the second of a pair, delivery of the push to the partner's owner — each
 * resumed with the time of its answer.
 */
import type { Endpoint } from '../codec/address.js';
import { decodeMessage } from '../codec/messages.js';
import { WG_SYNC } from '../codec/wg-messages.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { looksLikeWireGuard } from '../crypto/wireguard.js';
import { AuthGate } from './auth-gate.js';
import { BindingResponder } from './binding.js';
import { ConnTable, Output, UDP } from './channels.js';
import { resolveLimits, type ServerConfig, type ServerLimits } from './config.js';
import { EffectTable } from './effects.js';
import { SourceRateLimiter } from './limits.js';
import { PushTable } from './pushes.js';
import { Rendezvous } from './rendezvous.js';
import { emptyStats, type ServerStats } from './stats.js';
import type { EffectOp, ServerAction, ServerInput, ServerSocketId } from './types.js';
import { WireGuard } from './wg-sync.js';
import { WgResponder } from './wg.js';

export type { ServerLimits, ServerConfig } from './config.js';
export { DEFAULT_LIMITS } from './config.js';
export type { ServerStats, ServerState } from './stats.js';
export type { ServerAction, ServerEvent, ServerInput, ServerSocketId, Channel, Owner, Push, Effect } from './types.js';

/** What the core itself holds (the shared state's tables are counted by their owner). */
export interface CoreState {
  readonly pendingPushes: number;
  readonly tcpConnections: number;
  readonly wgSessions: number;
  readonly wgResponderPeers: number;
  readonly pendingEffects: number;
}

/** How often the core's own tables (WireGuard sessions) are swept while they hold anything. */
const SWEEP_INTERVAL_MS = 1000;

export class ServerCore {
  readonly stats: ServerStats = emptyStats();
  readonly limits: ServerLimits;
  readonly serverId: string;
  /** The WireGuard handshake responder; undefined in a worker of a multi-process server. */
  readonly wg: WgResponder | undefined;
  private networks = new Map<string, NetworkKeys>();
  private readonly limiter: SourceRateLimiter;
  private readonly effects: EffectTable;
  private readonly pushes: PushTable;
  private readonly conns = new ConnTable();
  private readonly binding: BindingResponder;
  private readonly rendezvous: Rendezvous;
  private readonly wireguard: WireGuard;
  private nextSweepAt = 0;

  constructor(config: ServerConfig) {
    this.limits = resolveLimits(config.limits);
    this.serverId = config.serverId;
    this.limiter = new SourceRateLimiter(this.limits.rateTableSlots, this.limits.perSourceRate, this.limits.perSourceBurst, config.seed);
    this.effects = new EffectTable(this.limits.maxPendingEffects, this.limits.effectTimeoutMs);
    this.pushes = new PushTable(this.limits.maxRegistrations);
    this.wg = config.wgResponder === false ? undefined : new WgResponder([], config.randomBytes, { maxPeers: this.limits.maxRegistrations, ...config.wgLimits });
    const gate = new AuthGate(() => this.networks, this.limits.timestampWindowMs, this.stats, this.effects, config.notBefore);
    this.binding = new BindingResponder(this.stats, this.limits.answerBareBindings, config.rfc5780);
    this.rendezvous = new Rendezvous({
      serverId: config.serverId,
      limits: this.limits,
      stats: this.stats,
      effects: this.effects,
      gate,
      pushes: this.pushes,
      conns: this.conns,
      alternate: config.alternate,
      randomBytes: config.randomBytes,
      relay: config.relay,
    });
    this.wireguard = new WireGuard({ stats: this.stats, effects: this.effects, gate, proofKey: config.proofKey, alternate: config.alternate, responder: this.wg });
    this.setNetworks(config.networks);
  }

  /** Replaces the accepted secrets (SIGHUP reload). Registrations of dropped networks expire on their own. */
  setNetworks(networks: readonly NetworkKeys[]): void {
    this.networks = new Map(networks.map((n) => [n.networkIdHex, n]));
    this.wg?.setNetworks(networks.map((n) => ({ networkIdHex: n.networkIdHex, identity: n.wireguard })));
  }

  /** How many networks (accepted secrets) are served. */
  get networkCount(): number {
    return this.networks.size;
  }

  get state(): CoreState {
    return {
      pendingPushes: this.pushes.size,
      tcpConnections: this.conns.size,
      wgSessions: this.wg?.sessionCount ?? 0,
      wgResponderPeers: this.wg?.peerCount ?? 0,
      pendingEffects: this.effects.size,
    };
  }

  /** When to call `handle` with a `timer` input, if anything waits for time. */
  nextTimeoutAt(): number | undefined {
    let at = this.pushes.nextAt();
    const deadline = this.effects.nextDeadline();
    if (deadline !== undefined && (at === undefined || deadline < at)) at = deadline;
    if (this.wg && this.wg.peerCount + this.wg.sessionCount > 0 && (at === undefined || this.nextSweepAt < at)) at = this.nextSweepAt;
    return at;
  }

  handle(input: ServerInput): ServerAction[] {
    const out = new Output(this.stats);
    switch (input.type) {
      case 'datagram': {
        this.stats.datagramsIn++;
        this.stats.bytesIn += input.data.length;
        if (!this.limiter.allow(input.from.address, input.now)) {
          this.stats.rateLimited++;
          this.stats.unauthBytesIn += input.data.length;
          break;
        }
        this.dispatchDatagram(input.socket, input.from, input.data, input.now, out);
        break;
      }
      case 'wg-datagram':
        this.wireguard.packet(input.socket, input.from, input.data, input.now, out);
        break;
      case 'stream-message':
        this.dispatchStreamMessage(input.conn, input.from, input.data, input.now, out);
        break;
      case 'stream-closed':
        this.rendezvous.streamClosed(input.conn, input.now, out, (network) => this.networks.get(network));
        break;
      case 'push':
        this.rendezvous.deliver(input.push, input.now, out);
        break;
      case 'effect-done':
        this.effects.answer(input.ticket, { kind: 'done', value: input.result }, out, input.now);
        break;
      case 'effect-refused':
        this.effects.answer(input.ticket, { kind: 'refused', verdict: input.verdict }, out, input.now);
        break;
      case 'effect-failed': {
        const op = this.effects.answer(input.ticket, { kind: 'failed', reason: input.reason }, out, input.now);
        if (op !== undefined) this.storeError(op, input.reason, out);
        break;
      }
      case 'timer':
        for (const op of this.effects.expire(input.now, out)) this.storeError(op, `no answer within ${this.limits.effectTimeoutMs} ms`, out);
        this.rendezvous.resendDue(input.now, out);
        if (this.wg && input.now >= this.nextSweepAt) {
          this.wg.sweep(input.now);
          this.nextSweepAt = input.now + SWEEP_INTERVAL_MS;
        }
        break;
    }
    return out.actions;
  }

  private storeError(op: EffectOp, reason: string, out: Output): void {
    this.stats.storeErrors++;
    out.event({ type: 'store-error', op, reason });
  }

  private dispatchDatagram(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number, out: Output): void {
    if (looksLikeWireGuard(data)) {
      this.wireguard.packet(socket, from, data, now, out);
      return;
    }
    if (stunMethodOf(data) === WG_SYNC) {
      if (socket === 'main') this.wireguard.sync(from, data, now, out);
      else this.malformed(data);
      return;
    }
    const decoded = decodeMessage(data);
    if (!decoded.ok) {
      this.malformed(data);
      return;
    }
    const msg = decoded.msg;
    switch (msg.kind) {
      case 'binding':
        this.binding.answerDatagram(socket, msg, from, data.length, out, decoded.stun, (cost) => this.limiter.allow(from.address, now, cost));
        return;
      case 'register':
        // A TCP registration must come over TCP; registrations only on the main port.
        if (socket === 'main' && msg.transport !== 'tcp') this.rendezvous.register(msg, decoded.stun, data, from, UDP, now, out);
        else this.malformed(data);
        return;
      case 'report':
        if (socket === 'main') this.rendezvous.report(msg, decoded.stun, data, from, now, out);
        else this.malformed(data);
        return;
      case 'binding-ok':
      case 'register-ok':
      case 'error':
      case 'introduce':
      case 'probe':
      case 'probe-ok':
      case 'close':
      case 'notice':
        // Other Burrow messages are for peers, not for us: drop without a word.
        this.malformed(data);
        return;
    }
  }

  /**
   * One STUN message from a TCP rendezvous connection. TCP peers register over it and keep it open; their
   * introductions are pushed down it; they withdraw over it (REPORT) before closing it. Anything but a REGISTER for
   * TCP, a REPORT or a Binding closes it.
   */
  private dispatchStreamMessage(conn: number, from: Endpoint, data: Uint8Array, now: number, out: Output): void {
    this.stats.datagramsIn++;
    this.stats.bytesIn += data.length;
    this.stats.streamMessagesIn++;
    this.stats.streamBytesIn += data.length;
    if (!this.limiter.allow(from.address, now)) {
      this.stats.rateLimited++;
      return;
    }
    const decoded = decodeMessage(data);
    const channel = { kind: 'tcp', conn } as const;
    if (decoded.ok && decoded.msg.kind === 'binding') {
      this.binding.answerStream(channel, decoded.msg, from, out);
      return;
    }
    if (decoded.ok && decoded.msg.kind === 'report') {
      // A TCP peer's withdrawal (with its outcome), sent just before it closes the connection.
      this.rendezvous.report(decoded.msg, decoded.stun, data, from, now, out, channel);
      return;
    }
    if (!decoded.ok || decoded.msg.kind !== 'register' || decoded.msg.transport !== 'tcp') {
      this.stats.malformed++;
      out.closeStream(conn);
      return;
    }
    this.rendezvous.register(decoded.msg, decoded.stun, data, from, channel, now, out);
  }

  private malformed(data: Uint8Array): void {
    this.stats.malformed++;
    this.stats.unauthBytesIn += data.length;
  }
}

/** The STUN method of a datagram that has STUN's header shape, or -1. */
function stunMethodOf(data: Uint8Array): number {
  if (data.length < 20 || ((data[0] ?? 0xff) & 0xc0) !== 0 || data[4] !== 0x21 || data[5] !== 0x12 || data[6] !== 0xa4 || data[7] !== 0x42) return -1;
  const t = ((data[0] ?? 0) << 8) | (data[1] ?? 0);
  return ((t & 0x3e00) >> 2) | ((t & 0x00e0) >> 1) | (t & 0x000f);
}
