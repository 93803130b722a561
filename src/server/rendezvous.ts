/**
 * The rendezvous itself: REGISTER (over UDP and TCP), REPORT (a peer's outcome report, which also ends its
 * registration), introduction pushes and their re-sends, and the registrations of a TCP connection that closed.
 *
 * Lifecycle (docs/protocol.md, "Lifecycle"): a registration lives a few of its peer's refresh periods; a REPORT (or a
 * TCP connection closing) withdraws it, and a partner that still waits for it is told (NOTICE partner-left); a new
 * session under a live name takes it and the old session is told (NOTICE displaced), and a refresh of the old one is
 * answered 409 rather than taking the name back.
 *
 * A REGISTER, once through the auth gate:
 *
 *   register ──store: register-and-find-partner──▶ no partner, or nothing new for it ─▶ answer (with the partner's
 *                                                   introduction when there is a partner)
 *                                              └─▶ partner to tell ──router: deliver push to the partner's owner──▶
 *                                                     taken      ─▶ introduced; answer with the introduction
 *                                                     no owner   ─▶ the partner is gone: withdraw it; answer without
 *
 * The push is made here (this server holds the network keys) and sent by the partner's owner — the server the
 * partner registered with, whose packets its NAT admits — which also re-sends it until acknowledged
 * (src/server/pushes.ts).
 */
import type { Endpoint } from '../codec/address.js';
import { encodeMessage, Method, RegisterFlag, type Introduction, type NoticeKind, type Outcome, type OutcomeReport, type RegisterRequest } from '../codec/messages.js';
import type { StunMessage } from '../codec/stun.js';
import type { NetworkKeys } from '../crypto/keys.js';
import type { AnswerPolicy, AuthGate, Authenticated } from './auth-gate.js';
import { ownerOf, UDP, type ConnTable, type Output } from './channels.js';
import type { ServerLimits } from './config.js';
import type { EffectTable } from './effects.js';
import { displaced, encodeNotice, encodePush, introductionChanged, introductionOf, isNewSession, lifetimeMsOf, partnerOf, registrationOf } from './introductions.js';
import type { PushTable } from './pushes.js';
import type { ServerStats } from './stats.js';
import type { Registration } from './store.js';
import type { Channel, Owner, Push } from './types.js';
import type { RelayPolicy } from './relay/config.js';

const REGISTER_POLICY: AnswerPolicy = { method: Method.REGISTER, label: 'REGISTER' };
const REPORT_POLICY: AnswerPolicy = { method: undefined, label: 'outcome report' };

export interface RendezvousContext {
  readonly serverId: string;
  readonly limits: ServerLimits;
  readonly stats: ServerStats;
  readonly effects: EffectTable;
  readonly gate: AuthGate;
  readonly pushes: PushTable;
  readonly conns: ConnTable;
  readonly alternate: Endpoint | undefined;
  readonly randomBytes: (n: number) => Uint8Array;
  /** The relay introductions offer (src/server/relay/config.ts); undefined: no RELAY attribute. */
  readonly relay: RelayPolicy | undefined;
}

export class Rendezvous {
  /** The owner of every UDP registration this server takes (one object, shared by all of them). */
  private readonly udpOwner: Owner;

  constructor(private readonly ctx: RendezvousContext) {
    this.udpOwner = { server: ctx.serverId, channel: UDP };
  }

  register(msg: RegisterRequest, stun: StunMessage, data: Uint8Array, from: Endpoint, channel: Channel, now: number, out: Output): void {
    this.ctx.gate.check(msg, stun, data, from, channel, REGISTER_POLICY, now, out, (auth) => {
      this.store(auth, msg, now, out);
    });
  }

  /**
   * An outcome report (docs/protocol.md, §3 "Lifecycle"): authenticated and replay-checked like a REGISTER,
   * counted once per registration session, which it ends. Never answered, so it can neither amplify nor be used to
   * probe the server.
   */
  report(msg: OutcomeReport, stun: StunMessage, data: Uint8Array, from: Endpoint, now: number, out: Output, channel: Channel = UDP): void {
    this.ctx.gate.check(msg, stun, data, from, channel, REPORT_POLICY, now, out, (auth) => {
      const nonce = Buffer.from(msg.sessionNonce).toString('hex');
      // Only the session that was introduced counts, once: the report ends its registration, so a second copy, or a
      // report for an expired or evicted registration, matches nothing.
      this.ctx.gate.first(auth, { op: 'withdraw', network: auth.network.networkIdHex, name: msg.name, nonce, owner: undefined, now }, now, out, (reg, later, at) => {
        if (!reg) {
          if (msg.outcome !== 'withdrawn') this.ctx.stats.outcomesUnmatched++;
          return;
        }
        this.ctx.pushes.acknowledge(reg.network, reg.name);
        if (msg.outcome === 'connected') this.ctx.stats.outcomesConnected++;
        else if (msg.outcome === 'failed') this.ctx.stats.outcomesFailed++;
        else this.ctx.stats.withdrawals++;
        later.event({ type: 'outcome', network: reg.network, name: reg.name, outcome: msg.outcome });
        // A partner still waiting for it is told it left (a connected one has its path, and finishes on its own).
        if (msg.outcome !== 'connected') this.tellPartner(auth.network, reg, msg.outcome, at, later);
      });
    });
  }

  /**
   * A push the router delivered to this server, for a registration it owns: send it, and keep it until acknowledged.
   * A NOTICE is sent twice at once and not kept (its recipient stops; its next refresh would learn the same).
   */
  deliver(push: Push, now: number, out: Output): void {
    const channel = push.owner.channel;
    if (channel.kind === 'tcp' && !this.ctx.conns.has(channel.conn)) return; // the connection has gone
    out.reply(channel, push.to, push.data);
    if (push.notice === true) {
      if (channel.kind === 'udp') out.reply(channel, push.to, push.data);
      return;
    }
    this.ctx.pushes.sent(push, now);
  }

  /**
   * `gone` has left (withdrawn, or its connection closed): if its target holds a live registration that waits for it,
   * tell that session with a NOTICE through its owner. `keys` are the network's (for TCP, any network: pass them).
   */
  private tellPartner(keys: NetworkKeys | undefined, gone: Registration, outcome: Outcome | undefined, now: number, out: Output): void {
    if (!keys) return;
    this.ctx.effects.request({ op: 'lookup', network: gone.network, name: gone.target, now }, undefined, now, out, (answer, later, at) => {
      if (answer.kind !== 'done' || !answer.value || answer.value.target !== gone.name || answer.value.name === gone.name) return;
      const partner = answer.value;
      this.ctx.stats.partnersToldLeft++;
      later.event({ type: 'partner-left', network: gone.network, name: gone.name, partner: partner.name });
      this.notify(keys, partner, 'partner-left', gone, at, later, outcome);
    });
  }

  /** Sends `recipient` a NOTICE about `about`, through the recipient's owner (which may be another server). */
  private notify(keys: NetworkKeys, recipient: Registration, notice: NoticeKind, about: Registration, now: number, out: Output, outcome?: Outcome): void {
    const push: Push = {
      network: recipient.network,
      recipient: recipient.name,
      version: recipient.version,
      owner: recipient.owner,
      to: recipient.mapped,
      data: encodeNotice(keys, recipient, notice, about, this.ctx.randomBytes(12), now, outcome),
      notice: true,
    };
    this.ctx.effects.request({ op: 'deliver', push }, undefined, now, out, () => undefined);
  }

  /** Re-sends the pushes that are due, unless their recipient has registered since (or is gone). */
  resendDue(now: number, out: Output): void {
    for (const entry of this.ctx.pushes.due(now)) {
      const { push } = entry;
      const asked = this.ctx.effects.request({ op: 'lookup', network: push.network, name: push.recipient, now }, undefined, now, out, (answer, later, at) => {
        // An unanswered lookup (a store that is down) does not stop the re-sends: they are bounded anyway.
        if (answer.kind === 'done' && answer.value?.version !== push.version) {
          this.ctx.pushes.drop(entry);
          return;
        }
        later.reply(push.owner.channel, push.to, push.data);
        this.ctx.pushes.resent(entry, at);
      });
      if (!asked) this.ctx.pushes.drop(entry);
    }
  }

  /**
   * A TCP connection closed: its registrations go with it (nothing could be pushed to them any more), and a partner
   * still waiting for one is told it left (a TCP peer that ends, or is killed, closes its connection).
   */
  streamClosed(conn: number, now: number, out: Output, keysOf: (network: string) => NetworkKeys | undefined): void {
    const owner: Owner = { server: this.ctx.serverId, channel: { kind: 'tcp', conn } };
    for (const r of this.ctx.conns.close(conn)) {
      this.ctx.pushes.acknowledge(r.network, r.name);
      // Only if it is still this connection's: the peer may have registered again over a new one.
      this.ctx.effects.request({ op: 'withdraw', network: r.network, name: r.name, nonce: r.nonce, owner, now }, undefined, now, out, (answer, later, at) => {
        if (answer.kind === 'done' && answer.value) this.tellPartner(keysOf(answer.value.network), answer.value, undefined, at, later);
      });
    }
  }

  private store(auth: Authenticated, msg: RegisterRequest, now: number, out: Output): void {
    const { network, from, channel } = auth;
    // UDP and TCP registrations share one name space (a name is one peer); they pair only when both say what they run.
    const net = network.networkIdHex;
    const lifetimeMs = lifetimeMsOf(msg, this.ctx.limits.lifetimeSeconds, this.ctx.limits.missedRefreshes);
    const reg = registrationOf(msg, net, from, ownerOf(this.ctx.serverId, channel, this.udpOwner), now, lifetimeMs);
    const refresh = ((msg.flags ?? 0) & RegisterFlag.REFRESH) !== 0;
    this.ctx.gate.first(auth, { op: 'register', registration: reg, now, ...(refresh ? { refresh: true } : {}) }, now, out, (result, later, at) => {
      const { previous, partner: candidate, evicted } = result;
      const stats = this.ctx.stats;
      if (result.superseded === true) {
        // A refresh of a session that a newer one replaced: it does not take the name back; it hears why.
        stats.registrationsRefused++;
        later.event({ type: 'displaced', network: net, name: msg.name, refused: true });
        later.reply(channel, from, encodeMessage({ kind: 'error', method: Method.REGISTER, txid: msg.txid, code: 409, reason: 'Displaced', timestamp: at }, { key: network.serverToClient }));
        return;
      }
      this.ctx.pushes.acknowledge(net, msg.name); // any REGISTER acknowledges a push to its sender
      if (channel.kind === 'tcp') this.ctx.conns.add(channel.conn, net, msg.name, reg.nonce);
      stats.evictions += evicted;
      stats.registrationsTotal++;
      const isNew = isNewSession(previous, reg);
      if (isNew) stats.registrationsNew++;
      const wasDisplaced = displaced(previous, reg);
      if (wasDisplaced) stats.registrationsDisplaced++;
      later.event({ type: 'registered', network: net, name: msg.name, from, isNew, displaced: wasDisplaced });
      if (wasDisplaced && previous) {
        // The old session is told, through its own owner (its NAT admits only that server's packets).
        later.event({ type: 'displaced', network: net, name: msg.name, refused: false });
        this.notify(network, previous, 'displaced', reg, at, later);
      }
      const partner = partnerOf(reg, candidate);
      if (!partner || !introductionChanged(previous, reg)) {
        this.answer(network, msg, from, channel, partner ? introductionOf(partner, msg.name, this.ctx.relay, at) : undefined, at, later);
        return;
      }
      this.introduce(auth, msg, reg, partner, at, later);
    });
  }

  /** Pushes `reg` to `partner` (it may have waited for minutes) through the partner's owner; then answers `reg`. */
  private introduce(auth: Authenticated, msg: RegisterRequest, reg: Registration, partner: Registration, now: number, out: Output): void {
    const { network, from, channel } = auth;
    const push: Push = {
      network: partner.network,
      recipient: partner.name,
      version: partner.version,
      owner: partner.owner,
      to: partner.mapped,
      data: encodePush(network, partner, reg, this.ctx.randomBytes(12), now, this.ctx.relay),
    };
    this.ctx.gate.next(auth, { op: 'deliver', push }, now, out, (delivered, later, at) => {
      if (delivered) {
        this.ctx.stats.introductions++;
        later.event({ type: 'introduced', network: reg.network, a: partner.name, b: reg.name });
        this.answer(network, msg, from, channel, introductionOf(partner, msg.name, this.ctx.relay, at), at, later);
        return;
      }
      // Nobody listens for the partner's server: it is gone, and so, for us, is the partner.
      this.ctx.stats.partnersUnreachable++;
      later.event({ type: 'partner-unreachable', network: reg.network, name: partner.name, server: partner.owner.server });
      this.ctx.effects.request({ op: 'withdraw', network: partner.network, name: partner.name, nonce: partner.nonce, owner: partner.owner, now: at }, undefined, at, later, () => undefined);
      this.answer(network, msg, from, channel, undefined, at, later);
    });
  }

  private answer(network: NetworkKeys, msg: RegisterRequest, from: Endpoint, channel: Channel, intro: Introduction | undefined, now: number, out: Output): void {
    out.reply(channel, from, encodeMessage({
      kind: 'register-ok',
      txid: msg.txid,
      mapped: from,
      lifetimeSeconds: Math.ceil(lifetimeMsOf(msg, this.ctx.limits.lifetimeSeconds, this.ctx.limits.missedRefreshes) / 1000),
      timestamp: now,
      alternate: this.ctx.alternate,
      intro,
    }, { key: network.serverToClient, relayOfferKey: network.relayOffer }));
  }
}
