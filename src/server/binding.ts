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
 *
 * RFC 5780 behaviour discovery (docs/protocol.md, "NAT behaviour discovery"):
 *  - with a second IP address (2 IPs × 2 ports, `rfc5780` in the config), every Binding answer over UDP carries
 *    XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS (the socket whose IP and port both differ from the one the
 *    request came in on), nothing else: clients learn OTHER-ADDRESS from a bare request (coturn's
 *    turnutils_natdiscovery does). The answer leaves from the socket CHANGE-REQUEST names and goes to RESPONSE-PORT
 *    if given;
 *  - without one, only the mapping tests are offered: no OTHER-ADDRESS (RFC 5780 section 7.4), and a request to
 *    change IP or port is refused with 420 (Unknown Attribute: CHANGE-REQUEST), which carries no reason text.
 * The worst case is a bare 20-byte request answered with 56 bytes (IPv4; 92 for IPv6, +8 each with FINGERPRINT).
 * Besides the datagram's own token, each answer that is longer than its request takes a second token from the same
 * per-source bucket, so toward one source (or one spoofed victim) the server sends at most (burst + rate × t) / 2
 * of them.
 */
import type { Endpoint } from '../codec/address.js';
import { encodeMessage, type BindingRequest } from '../codec/messages.js';
import { readRfc5780Request, type Rfc5780Request } from '../codec/rfc5780.js';
import { Attr, encodeErrorCode, encodePlainAddress, encodeStun, encodeXorAddress, type StunMessage } from '../codec/stun.js';
import type { Output } from './channels.js';
import type { Rfc5780Sockets } from './config.js';
import type { ServerStats } from './stats.js';
import type { Channel, ServerSocketId } from './types.js';

/** Socket ids by (changed IP, changed port) bits. */
const SOCKET_BITS: Record<ServerSocketId, number> = { main: 0, alternate: 1, 'other-ip': 2, 'other-ip-port': 3 };
const SOCKET_OF: readonly ServerSocketId[] = ['main', 'alternate', 'other-ip', 'other-ip-port'];

/** Takes `cost` more tokens from the source's per-source bucket; false when it has none left. */
export type ExtraBudget = (cost: number) => boolean;

export class BindingResponder {
  constructor(
    private readonly stats: ServerStats,
    private readonly answerBare: boolean,
    private readonly rfc5780?: Rfc5780Sockets,
  ) {}

  /** A Binding request that arrived on UDP socket `socket`. */
  answerDatagram(socket: ServerSocketId, msg: BindingRequest, from: Endpoint, requestLength: number, out: Output, stun?: StunMessage, budget?: ExtraBudget): void {
    this.stats.stunBindings++;
    this.stats.unauthBytesIn += requestLength;
    const behaviour = stun ? readRfc5780Request(stun) : undefined;
    if (behaviour && !behaviour.ok) {
      // A malformed CHANGE-REQUEST or RESPONSE-PORT: not worth an answer.
      this.stats.malformed++;
      return;
    }
    if (behaviour?.request.asked || (this.rfc5780 !== undefined && behaviour !== undefined)) {
      this.answerBehaviour(socket, msg, from, requestLength, out, behaviour.request, budget);
      return;
    }
    const reply = encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint });
    if (reply.length > requestLength && !this.answerBare) {
      this.stats.stunBindingsUnanswered++;
      return;
    }
    this.stats.unauthBytesOut += reply.length;
    out.send(socket, from, reply);
  }

  private answerBehaviour(
    socket: ServerSocketId,
    msg: BindingRequest,
    from: Endpoint,
    requestLength: number,
    out: Output,
    request: Rfc5780Request,
    budget: ExtraBudget | undefined,
  ): void {
    const { change, responsePort } = request;
    const to = { address: from.address, port: responsePort ?? from.port };
    const sockets = this.rfc5780;
    // The four sockets are of one family; a request of the other family (a dual-stack wildcard) gets mapping only.
    const family = (a: string): number => (a.includes(':') && !a.startsWith('::ffff:') ? 6 : 4);
    const usable = sockets !== undefined && family(sockets.main.address) === family(from.address);
    let reply: Buffer;
    let via: ServerSocketId = socket;
    if (!usable) {
      if (change.ip || change.port) {
        reply = encodeStun(0x001, 'error', msg.txid, [
          { type: Attr.ERROR_CODE, value: encodeErrorCode(420, '') },
          { type: Attr.UNKNOWN_ATTRIBUTES, value: new Uint8Array([Attr.CHANGE_REQUEST >> 8, Attr.CHANGE_REQUEST & 0xff]) },
        ], { fingerprint: msg.fingerprint });
      } else {
        reply = encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint });
      }
    } else {
      const bits = SOCKET_BITS[socket];
      via = SOCKET_OF[bits ^ (change.ip ? 2 : 0) ^ (change.port ? 1 : 0)] ?? socket;
      const other = SOCKET_OF[bits ^ 3] ?? socket;
      reply = encodeStun(0x001, 'success', msg.txid, [
        { type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress(from, msg.txid) },
        { type: Attr.RESPONSE_ORIGIN, value: encodePlainAddress(sockets[via]) },
        { type: Attr.OTHER_ADDRESS, value: encodePlainAddress(sockets[other]) },
      ], { fingerprint: msg.fingerprint });
    }
    if (reply.length > requestLength && !this.answerBare && !request.asked) {
      // Strict mode: a plain Binding (Burrow's own clients pad theirs to 44 bytes) still gets the minimal answer if that
      // is no longer than the request; RFC 5780 clients are answered only if they pad to the full answer.
      const minimal = encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint });
      if (minimal.length <= requestLength) {
        reply = minimal;
        via = socket;
      }
    }
    if (reply.length > requestLength && (!this.answerBare || (budget !== undefined && !budget(1)))) {
      this.stats.stunBindingsUnanswered++;
      return;
    }
    this.stats.unauthBytesOut += reply.length;
    if (usable || change.ip || change.port) this.stats.stunRfc5780Answers++;
    out.send(via, to, reply);
  }

  /** A Binding request over a TCP connection: no source can be spoofed there, so nothing to bound but the rate. */
  answerStream(channel: Channel, msg: BindingRequest, from: Endpoint, out: Output): void {
    this.stats.stunBindings++;
    out.reply(channel, from, encodeMessage({ kind: 'binding-ok', txid: msg.txid, mapped: from }, { fingerprint: msg.fingerprint }));
  }
}
