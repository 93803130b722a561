/**
 * WireGuard endpoint discovery in the core (design: docs/wireguard.md; wire: docs/protocol.md section 10):
 *  - WireGuard packets go to the responder (src/server/wg.ts), which answers handshakes and reports the endpoints
 *    that authenticated packets prove; those are written to the shared registry (src/server/wg-registry.ts). A core
 *    without a responder (a worker of a multi-process server) passes them on to the process that has it;
 *  - WG-SYNC requests pass the auth gate, then WG-PROOF is checked against the shared WG-PROOF-KEY (the same on every
 *    server, so a proof made for one verifies on all); a valid proof stores the announcement, and the answer reports
 *    the sender and the keys it asked about, from the registry.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Endpoint } from '../codec/address.js';
import { decodeWgSync, encodeWgSyncOk, wgProof, WG_SYNC } from '../codec/wg-messages.js';
import { dh, type KeyPair } from '../crypto/wireguard.js';
import type { AnswerPolicy, AuthGate } from './auth-gate.js';
import { UDP, type Output } from './channels.js';
import type { EffectTable } from './effects.js';
import type { ServerStats } from './stats.js';
import type { Effect, ServerSocketId } from './types.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';

type WgEffect = Extract<Effect, { op: 'wg-lookup' }>;
import type { WgResponder } from './wg.js';

const WG_SYNC_POLICY: AnswerPolicy = { method: WG_SYNC, label: 'WG-SYNC' };

export interface WireGuardContext {
  readonly stats: ServerStats;
  readonly effects: EffectTable;
  readonly gate: AuthGate;
  readonly proofKey: KeyPair;
  readonly alternate: Endpoint | undefined;
  /** Undefined in a worker, which passes WireGuard packets on. */
  readonly responder: WgResponder | undefined;
}

export class WireGuard {
  constructor(private readonly ctx: WireGuardContext) {}

  /** A WireGuard-shaped datagram: a client's interface handshaking with us, or its keepalive. */
  packet(socket: ServerSocketId, from: Endpoint, data: Uint8Array, now: number, out: Output): void {
    const responder = this.ctx.responder;
    if (!responder) {
      out.toWgResponder(socket, from, data);
      return;
    }
    const stats = this.ctx.stats;
    const outcome = responder.handlePacket(from, data, now);
    switch (outcome.type) {
      case 'answered':
        // The initiation authenticated an interface key but not yet the network secret: unauthenticated, and the
        // 92-byte answer is shorter than the 148-byte initiation.
        stats.unauthBytesIn += data.length;
        stats.unauthBytesOut += outcome.reply.length;
        out.send(socket, from, outcome.reply);
        return;
      case 'endpoint':
        // Recorded for every server to report; a full effect table only delays it to the next keepalive.
        this.ctx.effects.request({ op: 'wg-endpoint', network: outcome.network, key: outcome.key, endpoint: outcome.endpoint, now }, undefined, now, out, () => undefined);
        if (outcome.moved) out.event({ type: 'wg-endpoint', network: outcome.network, key: outcome.key.toString('base64'), endpoint: outcome.endpoint });
        return;
      case 'stale-session':
        return;
      case 'rejected':
        stats.unauthBytesIn += data.length;
        if (outcome.reason === 'replayed-initiation' || outcome.reason === 'replayed-transport') stats.replaysRejected++;
        else stats.authFailures++;
        out.rejected(from, `WireGuard: ${outcome.reason}`);
        return;
    }
  }

  /** WG-SYNC: an interface announces itself (bound to its key by WG-PROOF) and asks for its peers' endpoints. */
  sync(from: Endpoint, data: Uint8Array, now: number, out: Output): void {
    const decoded = decodeWgSync(data);
    if (!decoded.ok || decoded.msg.kind !== 'wg-sync') {
      this.ctx.stats.malformed++;
      this.ctx.stats.unauthBytesIn += data.length;
      return;
    }
    const msg = decoded.msg;
    this.ctx.gate.check(msg, decoded.stun, data, from, UDP, WG_SYNC_POLICY, now, out, (auth) => {
      const net = auth.network.networkIdHex;
      // The proof binds the announcement to the interface key: X25519 with the shared proof key, which no holder of
      // the secret knows, so only the holder of the interface's private key can compute it. Without a valid proof
      // (the first request, before the sender knows the proof key) nothing is announced, but the lookups are
      // answered: they need only the network secret.
      const shared = msg.proof ? dh(this.ctx.proofKey.privateKey, msg.key) : undefined;
      const proof = shared ? wgProof(shared, msg) : undefined;
      const proven = proof !== undefined && msg.proof !== undefined && proof.length === msg.proof.length && timingSafeEqual(proof, msg.proof);
      const lookup: WgEffect = { op: 'wg-lookup', network: net, keys: [msg.key, ...msg.query], now };
      const answer = (peers: readonly WgPeerInfo[], later: Output, at: number): void => {
        const [self, ...rest] = peers;
        if (!self) return;
        this.ctx.stats.wgSyncs++;
        later.reply(UDP, from, encodeWgSyncOk({
          kind: 'wg-sync-ok',
          txid: msg.txid,
          timestamp: at,
          self,
          peers: rest,
          alternate: this.ctx.alternate,
          proofKey: this.ctx.proofKey.publicKey,
        }, auth.network.serverToClient));
      };
      if (!proven) {
        this.ctx.gate.first(auth, lookup, now, out, (peers, later, at) => {
          // Counted only for a fresh request: a replay is a replay, whatever its proof.
          if (msg.proof) {
            this.ctx.stats.authFailures++;
            later.rejected(from, 'WG-PROOF does not match the interface key (or an old proof key)');
          }
          answer(peers, later, at);
        });
        return;
      }
      const facts = { listenPort: msg.listenPort, hosts: msg.hosts, mapping: msg.mapping };
      this.ctx.gate.first(auth, { op: 'wg-announce', network: net, key: msg.key, facts, now }, now, out, (_, later, at) => {
        this.ctx.gate.next(auth, { ...lookup, now: at }, at, later, (peers, last, t) => {
          answer(peers, last, t);
        });
      });
    });
  }
}
