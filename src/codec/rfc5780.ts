/**
 * NAT behaviour discovery (RFC 5780) on top of STUN Binding: the request attributes CHANGE-REQUEST and RESPONSE-PORT,
 * the answer attributes RESPONSE-ORIGIN and OTHER-ADDRESS. Pure and never throwing: readers return a typed reason.
 * The server's rules for answering them are in src/server/binding.ts; the byte layouts in docs/protocol.md.
 *
 * ```
 * CHANGE-REQUEST (0x0003)                      RESPONSE-PORT (0x0027)
 *  0                   1                   2   0                   1                   2                   3
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-...  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * |0 0 0 0 ... 0 0 0 0 0 0 0 0 0 0 0 0 0|A|B|0|  |             Port              |    Reserved (zero)            |
 * +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-...  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 * A (0x04): change IP; B (0x02): change port.
 * ```
 * RESPONSE-ORIGIN (0x802B) and OTHER-ADDRESS (0x802C) are laid out like MAPPED-ADDRESS (not XORed).
 */
import type { Endpoint } from './address.js';
import {
  Attr,
  decodePlainAddress,
  decodeXorAddress,
  encodeStun,
  findAttribute,
  type AttributeInput,
  type StunMessage,
} from './stun.js';

export const CHANGE_IP = 0x04;
export const CHANGE_PORT = 0x02;

/** What a CHANGE-REQUEST asks for. */
export interface ChangeRequest {
  readonly ip: boolean;
  readonly port: boolean;
}

export type Rfc5780Error =
  | 'bad-change-request-length'
  | 'bad-response-port-length'
  | 'bad-response-origin'
  | 'bad-other-address'
  | 'bad-mapped-address'
  | 'no-mapped-address';

export function encodeChangeRequest(change: ChangeRequest): Uint8Array {
  return new Uint8Array([0, 0, 0, (change.ip ? CHANGE_IP : 0) | (change.port ? CHANGE_PORT : 0)]);
}

/** Bits other than A and B are ignored (RFC 5780 section 7.2: they are reserved and zero when sent). */
export function decodeChangeRequest(value: Uint8Array): { ok: true; change: ChangeRequest } | { ok: false; reason: Rfc5780Error } {
  if (value.length !== 4) return { ok: false, reason: 'bad-change-request-length' };
  const flags = value[3] ?? 0;
  return { ok: true, change: { ip: (flags & CHANGE_IP) !== 0, port: (flags & CHANGE_PORT) !== 0 } };
}

export function encodeResponsePort(port: number): Uint8Array {
  return new Uint8Array([(port >> 8) & 0xff, port & 0xff, 0, 0]);
}

/** Any 16-bit value, 0 included (erratum 2844); the reserved half is ignored. */
export function decodeResponsePort(value: Uint8Array): { ok: true; port: number } | { ok: false; reason: Rfc5780Error } {
  if (value.length !== 4) return { ok: false, reason: 'bad-response-port-length' };
  return { ok: true, port: ((value[0] ?? 0) << 8) | (value[1] ?? 0) };
}

/** The RFC 5780 parts of a Binding request. `asked`: it carried CHANGE-REQUEST or RESPONSE-PORT at all. */
export interface Rfc5780Request {
  readonly asked: boolean;
  readonly change: ChangeRequest;
  readonly responsePort: number | undefined;
}

export function readRfc5780Request(msg: StunMessage): { ok: true; request: Rfc5780Request } | { ok: false; reason: Rfc5780Error } {
  const changeAttr = findAttribute(msg, Attr.CHANGE_REQUEST);
  const portAttr = findAttribute(msg, Attr.RESPONSE_PORT);
  let change: ChangeRequest = { ip: false, port: false };
  if (changeAttr) {
    const d = decodeChangeRequest(changeAttr.value);
    if (!d.ok) return d;
    change = d.change;
  }
  let responsePort: number | undefined;
  if (portAttr) {
    const d = decodeResponsePort(portAttr.value);
    if (!d.ok) return d;
    responsePort = d.port;
  }
  return { ok: true, request: { asked: changeAttr !== undefined || portAttr !== undefined, change, responsePort } };
}

/** What an RFC 5780 Binding answer says. */
export interface Rfc5780Answer {
  /** Where the server saw the request come from (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an RFC 3489 server). */
  readonly mapped: Endpoint;
  /** Where the server sent the answer from (RESPONSE-ORIGIN), if it said. */
  readonly origin: Endpoint | undefined;
  /** The server's other IP address and port (OTHER-ADDRESS), if it has one. */
  readonly other: Endpoint | undefined;
}

export function readRfc5780Answer(msg: StunMessage): { ok: true; answer: Rfc5780Answer } | { ok: false; reason: Rfc5780Error } {
  let mapped: Endpoint | undefined;
  const xor = findAttribute(msg, Attr.XOR_MAPPED_ADDRESS);
  if (xor) {
    const d = decodeXorAddress(xor.value, msg.transactionId);
    if (!d.ok) return { ok: false, reason: 'bad-mapped-address' };
    mapped = d.endpoint;
  } else {
    const plain = findAttribute(msg, Attr.MAPPED_ADDRESS);
    if (!plain) return { ok: false, reason: 'no-mapped-address' };
    const d = decodePlainAddress(plain.value);
    if (!d.ok) return { ok: false, reason: 'bad-mapped-address' };
    mapped = d.endpoint;
  }
  const plainOf = (type: number, reason: Rfc5780Error): Endpoint | undefined | Rfc5780Error => {
    const a = findAttribute(msg, type);
    if (!a) return undefined;
    const d = decodePlainAddress(a.value);
    return d.ok ? d.endpoint : reason;
  };
  const origin = plainOf(Attr.RESPONSE_ORIGIN, 'bad-response-origin');
  if (typeof origin === 'string') return { ok: false, reason: origin };
  const other = plainOf(Attr.OTHER_ADDRESS, 'bad-other-address');
  if (typeof other === 'string') return { ok: false, reason: other };
  return { ok: true, answer: { mapped, origin, other } };
}

/**
 * A Binding request for a behaviour test. `padTo` makes it (with a SOFTWARE attribute, which every server ignores)
 * as long as the answer it asks for, so that no server amplifies to answer Burrow.
 */
export function encodeTestRequest(
  txid: Uint8Array,
  options: { readonly change?: ChangeRequest; readonly responsePort?: number; readonly padTo?: number } = {},
): Buffer {
  const attributes: AttributeInput[] = [{ type: Attr.CHANGE_REQUEST, value: encodeChangeRequest(options.change ?? { ip: false, port: false }) }];
  if (options.responsePort !== undefined) attributes.push({ type: Attr.RESPONSE_PORT, value: encodeResponsePort(options.responsePort) });
  const base = 20 + attributes.reduce((n, a) => n + 4 + a.value.length, 0);
  const missing = (options.padTo ?? 0) - base;
  if (missing >= 4) attributes.push({ type: Attr.SOFTWARE, value: Buffer.alloc(missing - 4, 0x20) });
  return encodeStun(0x001, 'request', txid, attributes);
}

/**
 * The longest RFC 5780 answer Burrow's server sends to a request from `family`: header, XOR-MAPPED-ADDRESS,
 * RESPONSE-ORIGIN and OTHER-ADDRESS (no SOFTWARE); FINGERPRINT adds 8 when the request carried one.
 */
export function rfc5780AnswerLength(family: 4 | 6): number {
  return 20 + 3 * (family === 4 ? 12 : 24);
}
