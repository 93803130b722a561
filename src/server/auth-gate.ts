/**
 * The one gate every authenticated request passes (REGISTER over UDP and TCP, REPORT, WG-SYNC), in this order,
 * cheapest first: a network this server serves → MESSAGE-INTEGRITY-SHA256 under its client-to-server key →
 * TIMESTAMP within the window → the shared replay guard. Only a fresh request changes anything.
 *
 * The replay check is not a request of its own: the request's first effect carries it as a guard (`first`), and
 * the shared state checks and records the fingerprint and, only if it is fresh, carries the effect out — one step,
 * one round trip (one IPC message, one Redis script). A refused effect comes back here.
 *
 * Failures are counted and reported here. Whether they are answered depends on the request (`AnswerPolicy`):
 * REGISTER and WG-SYNC answer 401 (unauthenticated, so a client can tell that its secret differs) and 438 (with the
 * server's clock, authenticated, so a client can correct its clock); REPORT is never answered. Every such answer is
 * no longer than the request (`Output.replyUnauthenticated`). A replay is never answered at all. A shared state that
 * does not answer draws an authenticated 503 (REGISTER, WG-SYNC), so that the client can tell "the server cannot
 * reach its store" from "the peer is absent".
 */
import type { Endpoint } from '../codec/address.js';
import { encodeMessage } from '../codec/messages.js';
import { Attr, findAttribute, verifyIntegrity, type StunMessage } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import type { Output } from './channels.js';
import type { EffectTable } from './effects.js';
import type { ServerStats } from './stats.js';
import type { Channel, Effect, EffectOp, EffectResults, Guard } from './types.js';

const NO_MAC = new Uint8Array(8);

/** The fields of an authenticated request that the gate reads. */
export interface AuthRequest {
  readonly txid: Uint8Array;
  readonly networkId: Uint8Array;
  readonly timestamp: number;
}

/** How failures are answered: with an error of `method` (REGISTER, WG-SYNC), or not at all (REPORT). */
export interface AnswerPolicy {
  readonly method: number | undefined;
  /** For the `rejected` events: what the request was. */
  readonly label: string;
}

/** A request that passed the checks so far; its first effect must carry `guard`. */
export interface Authenticated {
  readonly network: NetworkKeys;
  readonly guard: Guard;
  readonly req: AuthRequest;
  readonly from: Endpoint;
  readonly channel: Channel;
  readonly policy: AnswerPolicy;
  /** The request's length: no failure answer is longer. */
  readonly length: number;
}

type Resume<K extends EffectOp> = (value: EffectResults[K], out: Output, now: number) => void;

export class AuthGate {
  constructor(
    private readonly networks: () => ReadonlyMap<string, NetworkKeys>,
    private readonly timestampWindowMs: number,
    private readonly stats: ServerStats,
    private readonly effects: EffectTable,
    /** Timestamps older than this are stale whatever the window says (the server's start: ServerConfig.notBefore). */
    private readonly notBefore = -Infinity,
  ) {}

  /** Network, MAC and timestamp; `then` continues at once with a request that passed, whose first effect is guarded. */
  check(req: AuthRequest, stun: StunMessage, data: Uint8Array, from: Endpoint, channel: Channel, policy: AnswerPolicy, now: number, out: Output, then: (auth: Authenticated) => void): void {
    const network = this.networks().get(Buffer.from(req.networkId).toString('hex'));
    if (!network || verifyIntegrity(data, stun, network.clientToServer) !== 'valid') {
      this.stats.authFailures++;
      this.stats.unauthBytesIn += data.length;
      out.rejected(from, `${policy.label}: ${network ? 'bad MAC' : 'unknown network (secret differs)'}`);
      // Short and unauthenticated: it lets the client say that its secret differs from ours.
      if (policy.method !== undefined) {
        out.replyUnauthenticated(channel, from, data.length, encodeMessage({ kind: 'error', method: policy.method, txid: req.txid, code: 401, reason: 'Unauthenticated', timestamp: undefined }));
      }
      return;
    }
    // Older than the server's start: the replay guard has forgotten what came before, so it could be a replay.
    if (Math.abs(req.timestamp - now) > this.timestampWindowMs || req.timestamp < this.notBefore) {
      this.stale(network, req, from, channel, policy, data.length, now, out);
      return;
    }
    // The first 8 bytes of the MAC identify the message; the core keeps the datagram unchanged meanwhile.
    const fingerprint = findAttribute(stun, Attr.MESSAGE_INTEGRITY_SHA256)?.value.subarray(0, 8) ?? NO_MAC;
    then({ network, guard: { fingerprint, now, timestamp: req.timestamp }, req, from, channel, policy, length: data.length });
  }

  /**
   * 438 with the server's clock. Authenticated with the server key, so only a holder of the secret can set its clock
   * by it; still no longer than the request, because a stale request may be a replay from anyone.
   */
  private stale(network: NetworkKeys, req: AuthRequest, from: Endpoint, channel: Channel, policy: AnswerPolicy, length: number, now: number, out: Output): void {
    this.stats.staleTimestamps++;
    if (policy.method !== undefined) {
      out.replyUnauthenticated(channel, from, length, encodeMessage({ kind: 'error', method: policy.method, txid: req.txid, code: 438, reason: 'Stale', timestamp: now }, { key: network.serverToClient }));
    }
  }

  /** The request's first effect, carried out only if the request is fresh; `resume` runs only then. */
  first<K extends EffectOp>(auth: Authenticated, effect: Extract<Effect, { op: K }>, now: number, out: Output, resume: Resume<K>): void {
    this.ask(auth, effect, auth.guard, now, out, resume);
  }

  /** A later effect of a request that passed. */
  next<K extends EffectOp>(auth: Authenticated, effect: Extract<Effect, { op: K }>, now: number, out: Output, resume: Resume<K>): void {
    this.ask(auth, effect, undefined, now, out, resume);
  }

  private ask<K extends EffectOp>(auth: Authenticated, effect: Extract<Effect, { op: K }>, guard: Guard | undefined, now: number, out: Output, resume: Resume<K>): void {
    const asked = this.effects.request(effect, guard, now, out, (answer, later, at) => {
      switch (answer.kind) {
        case 'done':
          resume(answer.value, later, at);
          return;
        case 'refused':
          if (answer.verdict === 'stale') {
            // Older than the shared guard's memory (its store was emptied since): the client corrects its clock.
            this.stale(auth.network, auth.req, auth.from, auth.channel, auth.policy, auth.length, at, later);
            return;
          }
          this.stats.replaysRejected++;
          this.stats.unauthBytesIn += auth.length;
          later.rejected(auth.from, answer.verdict === 'replay' ? `${auth.policy.label}: replayed message` : `${auth.policy.label}: replay cache full`);
          return;
        case 'failed':
          this.storeUnavailable(auth, later);
          return;
      }
    });
    if (!asked) {
      // Too many requests to the shared state in flight: dropped unanswered (the client retries).
      this.stats.storeBusy++;
      out.rejected(auth.from, `${auth.policy.label}: too many requests to the shared store in flight`);
    }
  }

  /** The shared state did not answer (counted and reported by the core): an authenticated 503, never longer than the request. */
  private storeUnavailable(auth: Authenticated, out: Output): void {
    if (auth.policy.method === undefined) return;
    const answer = encodeMessage({ kind: 'error', method: auth.policy.method, txid: auth.req.txid, code: 503, reason: 'Store Unavailable', timestamp: undefined }, { key: auth.network.serverToClient });
    if (answer.length <= auth.length) out.reply(auth.channel, auth.from, answer);
  }
}
