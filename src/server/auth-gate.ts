/**
 * The one gate every authenticated request passes (REGISTER over UDP and TCP, REPORT, WG-SYNC), in this order,
 * cheapest first: a network this server serves → MESSAGE-INTEGRITY-SHA256 under its client-to-server key →
 * TIMESTAMP within the window → the shared replay guard (an `effect`, answered later). Only a fresh request goes on.
 *
 * Failures are counted and reported here. Whether they are answered depends on the request (`AnswerPolicy`):
 * REGISTER and WG-SYNC answer 401 (unauthenticated, so a client can tell that its secret differs) and 438 (with the
 * server's clock, authenticated, so a client can correct its clock); REPORT is never answered. Every such answer is
 * no longer than the request (`Output.replyUnauthenticated`). A replay is never answered at all.
 */
import type { Endpoint } from '../codec/address.js';
import { encodeMessage } from '../codec/messages.js';
import { Attr, findAttribute, verifyIntegrity, type StunMessage } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import type { Output } from './channels.js';
import type { EffectTable } from './effects.js';
import type { ServerStats } from './stats.js';
import type { Channel } from './types.js';

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

/** A request that passed; `then` continues with it. */
export type Continue = (network: NetworkKeys, out: Output, now: number) => void;

export class AuthGate {
  constructor(
    private readonly networks: () => ReadonlyMap<string, NetworkKeys>,
    private readonly timestampWindowMs: number,
    private readonly stats: ServerStats,
    private readonly effects: EffectTable,
  ) {}

  check(req: AuthRequest, stun: StunMessage, data: Uint8Array, from: Endpoint, channel: Channel, policy: AnswerPolicy, now: number, out: Output, then: Continue): void {
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
    if (Math.abs(req.timestamp - now) > this.timestampWindowMs) {
      this.stats.staleTimestamps++;
      // Authenticated with the server key, so only a holder of the secret can set its clock by it; still no longer
      // than the request, because a stale request may be a replay from anyone.
      if (policy.method !== undefined) {
        out.replyUnauthenticated(channel, from, data.length, encodeMessage({ kind: 'error', method: policy.method, txid: req.txid, code: 438, reason: 'Stale', timestamp: now }, { key: network.serverToClient }));
      }
      return;
    }
    const fingerprint = findAttribute(stun, Attr.MESSAGE_INTEGRITY_SHA256)?.value.subarray(0, 8) ?? NO_MAC;
    const asked = this.effects.request({ op: 'replay', fingerprint, now }, now, out, (answer, later, at) => {
      if (!answer.ok) {
        this.storeUnavailable(req, network, from, channel, policy, data.length, later);
        return;
      }
      if (answer.value === 'fresh') {
        then(network, later, at);
        return;
      }
      this.stats.replaysRejected++;
      this.stats.unauthBytesIn += data.length;
      later.rejected(from, answer.value === 'replay' ? `${policy.label}: replayed message` : `${policy.label}: replay cache full`);
    });
    if (!asked) this.busy(from, policy, out);
  }

  /** Too many requests to the shared state in flight: dropped unanswered (the client retries). */
  busy(from: Endpoint, policy: AnswerPolicy, out: Output): void {
    this.stats.storeBusy++;
    out.rejected(from, `${policy.label}: too many requests to the shared store in flight`);
  }

  /**
   * The shared state did not answer (a store that is down; counted and reported by the core): an authenticated 503, so that the client can say
   * "the server cannot reach its store" rather than "the peer is absent". Never longer than the request.
   */
  storeUnavailable(req: AuthRequest, network: NetworkKeys, from: Endpoint, channel: Channel, policy: AnswerPolicy, length: number, out: Output): void {
    if (policy.method === undefined) return;
    const answer = encodeMessage({ kind: 'error', method: policy.method, txid: req.txid, code: 503, reason: 'Store Unavailable', timestamp: undefined }, { key: network.serverToClient });
    if (answer.length <= length) out.reply(channel, from, answer);
  }
}
