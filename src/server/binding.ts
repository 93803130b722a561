/**
 * STUN Binding (RFC 8489 section 3): the one request the server answers without authentication. The answer is the
 * minimal RFC answer: XOR-MAPPED-ADDRESS, plus FINGERPRINT when the request carried one (section 14.7).
 *
 * Amplification (docs/protocol.md section 5): a bare request is 20 bytes (28 with FINGERPRINT) and its answer 32 or
 * 44 bytes (40 or 52), so the answer may exceed the request by up to 24 bytes. That is what every standard STUN
 * client sends, so it is answered at full speed, bounded like all traffic by the per-source rate limit that the core
 * applies before anything is parsed (`perSourceRate`/`perSourceBurst`): toward one victim address the server sends
 * at most burst + rate × t such answers, however many spoofed requests arrive. Burrow's own requests carry a SOFTWARE
 * attribute that makes them as long as their answer. With `answerBareBindings` off (strict mode) an answer longer
 * than its request is not sent.
 */
import type { Endpoint } from '../codec/address.js';
import { encodeMessage, type BindingRequest } from '../codec/messages.js';
import type { Output } from './channels.js';
import type { ServerStats } from './stats.js';
import type { Channel, ServerSocketId } from './types.js';

export class BindingResponder {
  constructor(
    private readonly stats: ServerStats,
    private readonly answerBare: boolean,
  ) {}

  /** A Binding request that arrived on UDP socket `socket`. */
  answerDatagram(socket: ServerSocketId, msg: BindingRequest, from: Endpoint, requestLength: number, out: Output): void {
    this.stats.stunBindings++;
    this.stats.unauthBytesIn += requestLength;
    const reply = encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint });
    if (reply.length > requestLength && !this.answerBare) {
      this.stats.stunBindingsUnanswered++;
      return;
    }
    this.stats.unauthBytesOut += reply.length;
    out.send(socket, from, reply);
  }

  /** A Binding request over a TCP connection: no source can be spoofed there, so nothing to bound but the rate. */
  answerStream(channel: Channel, msg: BindingRequest, from: Endpoint, out: Output): void {
    this.stats.stunBindings++;
    out.reply(channel, from, encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint }));
  }
}
