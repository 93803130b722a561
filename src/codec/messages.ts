/**
 * Burrow's messages, framed as STUN (RFC 8489) so one UDP port serves both Burrow and plain STUN.
 *
 * Pure codecs: `encode*` builds bytes from values (transaction ids, nonces and timestamps are passed in),
 * `decodeMessage` returns a typed message or a typed reason. Authentication (MESSAGE-INTEGRITY-SHA256)
 * is appended by `encodeMessage` when given a key and checked by the caller with `verifyIntegrity`,
 * because only the caller knows which key applies. The byte layouts are drawn in docs/protocol.md.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import type { Endpoint } from './address.js';
import {
  Attr,
  decodeErrorCode,
  decodePlainAddress,
  decodeStun,
  decodeXorAddress,
  encodeErrorCode,
  encodePlainAddress,
  encodeStun,
  encodeXorAddress,
  findAttribute,
  type AttributeInput,
  type StunDecodeError,
  type StunMessage,
} from './stun.js';

/** STUN methods. 0x001 is the standard Binding; the others are Burrow's own. */
export const Method = {
  BINDING: 0x001,
  REGISTER: 0x0b1,
  INTRODUCE: 0x0b2,
  PROBE: 0x0b3,
  CLOSE: 0x0b4,
  /** A peer's outcome report to the server (docs/protocol.md, §3 "Lifecycle"); it also withdraws the registration. */
  REPORT: 0x0b5,
  /** The server tells a peer that its partner left, or that another registration took its name (docs/protocol.md, "Lifecycle"). */
  NOTICE: 0x0b9,
} as const;

/** Burrow attribute types (comprehension-required range; only meaningful in Burrow methods). */
export const BurrowAttr = {
  NETWORK_ID: 0x4b01,
  PEER_NAME: 0x4b02,
  TARGET_NAME: 0x4b03,
  SESSION_NONCE: 0x4b04,
  PEER_NONCE: 0x4b05,
  TIMESTAMP: 0x4b06,
  HOST_CANDIDATE: 0x4b07,
  NAT_MAPPING: 0x4b08,
  LIFETIME: 0x4b09,
  FLAGS: 0x4b0a,
  TRANSPORT: 0x4b0b,
  /** In an outcome report (REPORT): 1 connected, 2 failed, 3 withdrawn. */
  OUTCOME: 0x4b10,
  /** A transport candidate of any kind with its priority (REGISTER and introductions); see `encodeCandidate`. */
  CANDIDATE: 0x4b13,
  /** In an introduction: which relay the pair may use (`RelayOffer`); see `encodeRelayOffer`. */
  RELAY: 0x4b14,
  /** What the sender runs (REGISTER), or the partner runs (introductions): see `PeerMode`. */
  MODE: 0x4b1a,
  /** REGISTER: the longest gap between the sender's refreshes, in ms; the server expires the registration after a few. */
  REFRESH_INTERVAL: 0x4b1b,
  /** In a NOTICE: what happened (see `NoticeKind`). */
  NOTICE: 0x4b1c,
} as const;

/** REGISTER flags (the FLAGS attribute). */
export const RegisterFlag = {
  /**
   * The sender holds a registration of this session already (an answer came back): the REGISTER refreshes it and must
   * not take the name back from a newer session that has replaced it since (the server answers 409 instead).
   */
  REFRESH: 0x01,
} as const;

/**
 * What a peer runs, so that the server can tell each side what the other runs and a mismatch is reported as such.
 * Compatible pairs: punch↔punch, pipe↔pipe, send↔receive, wg↔wg.
 */
export type PeerMode = 'punch' | 'pipe' | 'send' | 'receive' | 'wg';
/** Wire codes of the modes: the index + 1. */
const MODE_CODES: readonly PeerMode[] = ['punch', 'pipe', 'send', 'receive', 'wg'];

/** The mode the partner must run for `mode`. */
export function partnerModeFor(mode: PeerMode): PeerMode {
  return mode === 'send' ? 'receive' : mode === 'receive' ? 'send' : mode;
}

/** Whether two sides running `a` and `b` can work together. */
export function modesCompatible(a: PeerMode, b: PeerMode): boolean {
  return partnerModeFor(a) === b;
}

/**
 * What a NOTICE says: `partner-left` (the partner withdrew its registration, or its TCP connection to the server
 * closed: it ended its attempt, or was killed) or `displaced` (another session registered under the recipient's own
 * name and took it over). A partner that expired is not announced: the waiting side learns it from its next refresh.
 */
export type NoticeKind = 'partner-left' | 'displaced';
const NOTICE_CODES: readonly NoticeKind[] = ['partner-left', 'displaced'];

/** The rendezvous server's default port (UDP and TCP), the STUN port of RFC 8489 section 18.6. */
export const DEFAULT_PORT = 3478;

/** Which kind of path a registration is for; UDP and TCP registrations never pair with each other. */
export type Transport = 'udp' | 'tcp';

export const NETWORK_ID_LENGTH = 8;
export const NONCE_LENGTH = 16;
export const MAX_NAME_BYTES = 64;
/** Host (LAN) candidates a peer advertises at most; they share the CANDIDATE budget below. */
export const MAX_HOST_CANDIDATES = 8;
/** CANDIDATE attributes in one REGISTER or introduction at most (hosts, port mappings, relays, ...). */
export const MAX_CANDIDATES = 12;

/**
 * What a candidate is (RFC 8445 section 5.1.1.1, plus two kinds of Burrow's): `host` an address of the machine's own,
 * `srflx` its public mapping as a STUN server saw it, `prflx` an address a peer's probe came from, `relayed` an
 * address on a relay (TURN) that forwards to us, `mapped` a port the NAT keeps open for us by UPnP/NAT-PMP/PCP, and
 * `predicted` a guess at a port a NAT will use (birthday probing).
 */
export type CandidateKind = 'host' | 'srflx' | 'prflx' | 'relayed' | 'mapped' | 'predicted';
/** Wire codes of the candidate kinds: the index + 1. */
const CANDIDATE_KIND_CODES: readonly CandidateKind[] = ['host', 'srflx', 'prflx', 'relayed', 'mapped', 'predicted'];
/** The layout version of the CANDIDATE attribute's value. */
export const CANDIDATE_VERSION = 1;

/** A transport address a peer can be reached at, as advertised through the server. */
export interface Candidate {
  readonly kind: CandidateKind;
  /** RFC 8445 section 5.1.2 priority, 1 .. 2^31 - 1; higher is preferred. */
  readonly priority: number;
  readonly endpoint: Endpoint;
}

/** Probe flags. */
export const ProbeFlag = {
  /** The controlling peer proposes this path. */
  NOMINATE: 0x01,
  /** The controlled peer has adopted this path (in a probe response, or in a probe of its own). */
  ACCEPTED: 0x02,
} as const;

/** How a peer's NAT maps one local port to public ports (RFC 4787 section 4.1). */
export type NatMapping = 'unknown' | 'endpoint-independent' | 'endpoint-dependent';
const MAPPING_CODES: readonly NatMapping[] = ['unknown', 'endpoint-independent', 'endpoint-dependent'];
/**
 * How a peer's NAT picks public ports for new mappings (RFC 4787 section 4.1): byte 1 of NAT-MAPPING (0 unknown,
 * 1 preserving, 2 sequential, 3 random). Older peers send 0 and ignore it.
 */
export type PortAllocation = 'unknown' | 'preserving' | 'sequential' | 'random';
const ALLOCATION_CODES: readonly PortAllocation[] = ['unknown', 'preserving', 'sequential', 'random'];

/**
 * Which unsolicited senders a peer's NAT admits to an open mapping (RFC 4787 section 5): byte 2 of NAT-MAPPING (0
 * unknown, 1 endpoint-independent, 2 address-dependent, 3 address-and-port-dependent). Older peers send 0.
 */
export type NatFiltering = 'unknown' | 'endpoint-independent' | 'address-dependent' | 'address-and-port-dependent';
const FILTERING_CODES: readonly NatFiltering[] = ['unknown', 'endpoint-independent', 'address-dependent', 'address-and-port-dependent'];

/** The NAT-MAPPING value: mapping code, allocation code, filtering code, a zero byte. */
function natMappingValue(mapping: NatMapping, allocation: PortAllocation | undefined, filtering?: NatFiltering): Uint8Array {
  return u32(
    (MAPPING_CODES.indexOf(mapping) << 24) |
      (Math.max(0, ALLOCATION_CODES.indexOf(allocation ?? 'unknown')) << 16) |
      (Math.max(0, FILTERING_CODES.indexOf(filtering ?? 'unknown')) << 8),
  );
}

/**
 * Which relay an introduced pair may use, sent by the server in every introduction (RELAY attribute):
 * - `builtin`: the server's own TURN relay on its main UDP port; the peers derive their credentials from the network
 *   secret themselves (src/codec/turn.ts `builtinCredentials`);
 * - `turn`: a TURN server (coturn) with short-lived TURN REST credentials the server minted; the password travels
 *   sealed under the network's relay-offer key;
 * - `none`: this server offers no relay (`burrow serve --no-relay`).
 * An introduction without RELAY comes from a server that predates relays: treat it as `none`.
 */
export type RelayOffer =
  | { readonly kind: 'none' }
  | { readonly kind: 'builtin' }
  | {
      readonly kind: 'turn';
      /** `turn:HOST:PORT` (RFC 7065 form; `?transport=udp` allowed). */
      readonly url: string;
      readonly username: string;
      readonly password: string;
      /** Unix seconds after which the credentials stop working. */
      readonly expiry: number;
    };

/** What the server tells a peer about its partner. */
export interface Introduction {
  readonly peerName: string;
  readonly peerNonce: Uint8Array;
  /** The partner's address as the server sees it (server-reflexive). */
  readonly peerMapped: Endpoint;
  /** The candidates the partner advertised (host, relayed, mapped, ...), at most MAX_CANDIDATES. */
  readonly peerCandidates: readonly Candidate[];
  readonly peerMapping: NatMapping;
  /** Which relay this pair may use; undefined when the server sent none (an older server). */
  readonly relay?: RelayOffer;
  /** The partner's port allocation, when it reported one. */
  readonly peerAllocation?: PortAllocation;
  /** The partner's filtering, when it measured it (a server with a second IP). */
  readonly peerFiltering?: NatFiltering;
  /** What the partner runs; absent when it did not say (an older client). */
  readonly peerMode?: PeerMode;
}

export interface BindingRequest {
  readonly kind: 'binding';
  readonly txid: Uint8Array;
  /** The request carried FINGERPRINT, so the answer should too. */
  readonly fingerprint: boolean;
  /**
   * SOFTWARE text to send (comprehension-optional, so every server ignores it). Burrow's own clients
   * use it to make a request as long as its answer: no server then has to amplify to answer them.
   */
  readonly software?: string;
}
export interface BindingSuccess {
  readonly kind: 'binding-ok';
  readonly txid: Uint8Array;
  readonly mapped: Endpoint;
}
export interface RegisterRequest {
  readonly kind: 'register';
  readonly txid: Uint8Array;
  readonly networkId: Uint8Array;
  readonly name: string;
  readonly target: string;
  readonly sessionNonce: Uint8Array;
  readonly timestamp: number;
  /** The sender's candidates (its server-reflexive address is the one the server sees, so it is not among them). */
  readonly candidates: readonly Candidate[];
  readonly mapping: NatMapping;
  /** How the sender's NAT allocates ports, when it measured it (NAT-MAPPING byte 1). */
  readonly allocation?: PortAllocation;
  /** How the sender's NAT filters, when it measured it (NAT-MAPPING byte 2). */
  readonly filtering?: NatFiltering;
  /** Absent on the wire means UDP. */
  readonly transport?: Transport;
  /** What the sender runs (MODE); absent: it does not say. */
  readonly mode?: PeerMode;
  /** The longest gap between the sender's refreshes in ms (REFRESH-INTERVAL); absent: the server's default lifetime applies. */
  readonly refreshMs?: number;
  /** RegisterFlag bits (FLAGS); absent or 0: a REGISTER that starts (or restarts) the session. */
  readonly flags?: number;
}
export interface RegisterSuccess {
  readonly kind: 'register-ok';
  readonly txid: Uint8Array;
  readonly mapped: Endpoint;
  readonly lifetimeSeconds: number;
  readonly timestamp: number;
  /** The server's second port, for telling whether the NAT's mapping depends on the destination. */
  readonly alternate: Endpoint | undefined;
  readonly intro: Introduction | undefined;
}
export interface ErrorResponse {
  readonly kind: 'error';
  readonly method: number;
  readonly txid: Uint8Array;
  readonly code: number;
  readonly reason: string;
  /** Server time, sent with 438 so a client with a wrong clock can correct it. */
  readonly timestamp: number | undefined;
}
export interface IntroduceIndication {
  readonly kind: 'introduce';
  readonly txid: Uint8Array;
  readonly networkId: Uint8Array;
  readonly recipientNonce: Uint8Array;
  readonly timestamp: number;
  readonly intro: Introduction;
}
export interface ProbeRequest {
  readonly kind: 'probe';
  readonly txid: Uint8Array;
  readonly timestamp: number;
  readonly flags: number;
  /** Where the sender sent it; makes the request as long as its response. */
  readonly destination: Endpoint;
}
export interface ProbeSuccess {
  readonly kind: 'probe-ok';
  readonly txid: Uint8Array;
  readonly timestamp: number;
  readonly flags: number;
  /** Where the responder saw the request come from. */
  readonly mapped: Endpoint;
}
export interface CloseIndication {
  readonly kind: 'close';
  readonly txid: Uint8Array;
  readonly timestamp: number;
}
/**
 * How an attempt ended: `connected`, `failed` (introduced, but no path at the deadline), or `withdrawn` (ended for any
 * other reason: the timeout without a partner, cancelled, interrupted, an error).
 */
export type Outcome = 'connected' | 'failed' | 'withdrawn';
const OUTCOME_CODES: readonly Outcome[] = ['connected', 'failed', 'withdrawn'];
/**
 * A peer's report to the server of how its punch ended: a REPORT indication. Authenticated with the
 * client-to-server key and bound to the sender's registration by name and session nonce.
 */
export interface OutcomeReport {
  readonly kind: 'report';
  readonly txid: Uint8Array;
  readonly networkId: Uint8Array;
  readonly name: string;
  readonly sessionNonce: Uint8Array;
  readonly timestamp: number;
  readonly outcome: Outcome;
}

/**
 * A NOTICE indication from the server to one session (SESSION-NONCE is the recipient's): its partner (PEER-NAME,
 * PEER-NONCE) left, or another session (PEER-NONCE) took its own name (PEER-NAME). Authenticated with the
 * server-to-client key, like an introduction.
 */
export interface NoticeIndication {
  readonly kind: 'notice';
  readonly txid: Uint8Array;
  readonly networkId: Uint8Array;
  readonly recipientNonce: Uint8Array;
  readonly timestamp: number;
  readonly notice: NoticeKind;
  readonly peerName: string;
  readonly peerNonce: Uint8Array;
  /**
   * partner-left only: how the partner's attempt ended, when it said (its REPORT): `failed` (it reached its deadline
   * without a path: the network is the problem, and the recipient says so) or `withdrawn`. Absent: it did not say
   * (its TCP connection closed).
   */
  readonly outcome?: Outcome;
}

export type BurrowMessage =
  | BindingRequest
  | BindingSuccess
  | RegisterRequest
  | RegisterSuccess
  | ErrorResponse
  | IntroduceIndication
  | ProbeRequest
  | ProbeSuccess
  | CloseIndication
  | OutcomeReport
  | NoticeIndication;

export type MessageDecodeError =
  | { readonly reason: StunDecodeError }
  | { readonly reason: 'unknown-method'; readonly detail: string }
  | { readonly reason: 'missing-attribute'; readonly detail: string }
  | { readonly reason: 'bad-attribute'; readonly detail: string };

export type MessageDecodeResult =
  | { readonly ok: true; readonly msg: BurrowMessage; readonly stun: StunMessage }
  | ({ readonly ok: false } & MessageDecodeError);

// ---------------------------------------------------------------------------------------------
// Attribute value helpers.

/** A big-endian u32 attribute value. */
export function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n >>> 0);
  return b;
}

/** A big-endian u64 attribute value (a timestamp), clamped to ≥ 0 and whole. */
export function u64(n: number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(Math.max(0, Math.floor(n))));
  return b;
}

function utf8(s: string): Uint8Array {
  return Buffer.from(s, 'utf8');
}

/** Checks a peer name: 1..64 bytes of UTF-8 without control characters. Returns a reason or undefined. */
export function checkName(name: string): string | undefined {
  const bytes = Buffer.byteLength(name, 'utf8');
  if (bytes === 0) return 'is empty';
  if (bytes > MAX_NAME_BYTES) return `is ${bytes} bytes long; the limit is ${MAX_NAME_BYTES}`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'contains control characters';
  return undefined;
}

class Reader {
  constructor(
    private readonly msg: StunMessage,
    readonly fail: (e: MessageDecodeError) => never,
    readonly relayOfferKey: Uint8Array | undefined,
  ) {}
  optional(type: number): Uint8Array | undefined {
    return findAttribute(this.msg, type)?.value;
  }
  required(type: number, label: string): Uint8Array {
    const v = this.optional(type);
    if (!v) return this.fail({ reason: 'missing-attribute', detail: label });
    return v;
  }
  all(type: number): Uint8Array[] {
    return this.msg.attributes.filter((a) => a.type === type).map((a) => a.value);
  }
  fixed(type: number, label: string, length: number): Uint8Array {
    const v = this.required(type, label);
    if (v.length !== length) this.fail({ reason: 'bad-attribute', detail: `${label} must be ${length} bytes` });
    return v;
  }
  u32(type: number, label: string): number {
    const v = this.fixed(type, label, 4);
    return new DataView(v.buffer, v.byteOffset, 4).getUint32(0);
  }
  timestamp(): number {
    const v = this.fixed(BurrowAttr.TIMESTAMP, 'TIMESTAMP', 8);
    const big = new DataView(v.buffer, v.byteOffset, 8).getBigUint64(0);
    if (big > BigInt(Number.MAX_SAFE_INTEGER)) this.fail({ reason: 'bad-attribute', detail: 'TIMESTAMP out of range' });
    return Number(big);
  }
  name(type: number, label: string): string {
    const v = this.required(type, label);
    const text = new TextDecoder('utf-8', { fatal: false }).decode(v);
    const problem = checkName(text);
    if (problem !== undefined || Buffer.byteLength(text) !== v.length) {
      this.fail({ reason: 'bad-attribute', detail: `${label} ${problem ?? 'is not valid UTF-8'}` });
    }
    return text;
  }
  xorAddress(value: Uint8Array, label: string): Endpoint {
    const r = decodeXorAddress(value, this.msg.transactionId);
    if (!r.ok) return this.fail({ reason: 'bad-attribute', detail: `${label}: ${r.reason}` });
    return r.endpoint;
  }
  mapping(): NatMapping {
    const v = this.optional(BurrowAttr.NAT_MAPPING);
    if (!v) return 'unknown';
    if (v.length !== 4) this.fail({ reason: 'bad-attribute', detail: 'NAT-MAPPING must be 4 bytes' });
    return MAPPING_CODES[v[0] ?? 0] ?? 'unknown';
  }
  /** NAT-MAPPING byte 1; unknown codes read as 'unknown'. */
  filtering(): NatFiltering {
    const v = this.optional(BurrowAttr.NAT_MAPPING);
    return v && v.length === 4 ? FILTERING_CODES[v[2] ?? 0] ?? 'unknown' : 'unknown';
  }
  allocation(): PortAllocation {
    const v = this.optional(BurrowAttr.NAT_MAPPING);
    return v && v.length === 4 ? ALLOCATION_CODES[v[1] ?? 0] ?? 'unknown' : 'unknown';
  }
  transport(): Transport {
    const v = this.optional(BurrowAttr.TRANSPORT);
    if (!v) return 'udp';
    if (v.length !== 4 || (v[0] !== 0 && v[0] !== 1)) this.fail({ reason: 'bad-attribute', detail: 'TRANSPORT must be 4 bytes, 0 (UDP) or 1 (TCP)' });
    return v[0] === 1 ? 'tcp' : 'udp';
  }
  outcome(): Outcome {
    const v = this.fixed(BurrowAttr.OUTCOME, 'OUTCOME', 4);
    const outcome = OUTCOME_CODES[(v[0] ?? 0) - 1];
    if (outcome === undefined || v[1] !== 0 || v[2] !== 0 || v[3] !== 0) return this.fail({ reason: 'bad-attribute', detail: 'OUTCOME must be 1 (connected), 2 (failed) or 3 (withdrawn)' });
    return outcome;
  }
  relay(key: Uint8Array | undefined): RelayOffer | undefined {
    const v = this.optional(BurrowAttr.RELAY);
    if (!v) return undefined;
    const d = decodeRelayOffer(v, this.msg.transactionId, key);
    return d.ok ? d.offer : this.fail({ reason: 'bad-attribute', detail: `RELAY: ${d.reason}` });
  }
  /** A one-byte code in a 4-byte value (the rest zero), from `codes` (code = index + 1); undefined when absent. */
  private code<T>(type: number, label: string, codes: readonly T[]): T | undefined {
    const v = this.optional(type);
    if (!v) return undefined;
    const value = v.length === 4 && v[1] === 0 && v[2] === 0 && v[3] === 0 ? codes[(v[0] ?? 0) - 1] : undefined;
    if (value === undefined) return this.fail({ reason: 'bad-attribute', detail: `${label} must be 4 bytes: a code 1..${codes.length}, then 3 zero bytes` });
    return value;
  }
  mode(): PeerMode | undefined {
    return this.code(BurrowAttr.MODE, 'MODE', MODE_CODES);
  }
  notice(): NoticeKind {
    return this.code(BurrowAttr.NOTICE, 'NOTICE', NOTICE_CODES) ?? this.fail({ reason: 'missing-attribute', detail: 'NOTICE' });
  }
  refreshMs(): number | undefined {
    if (!this.optional(BurrowAttr.REFRESH_INTERVAL)) return undefined;
    const ms = this.u32(BurrowAttr.REFRESH_INTERVAL, 'REFRESH-INTERVAL');
    if (ms === 0) return this.fail({ reason: 'bad-attribute', detail: 'REFRESH-INTERVAL must not be 0' });
    return ms;
  }
  flags(): number | undefined {
    return this.optional(BurrowAttr.FLAGS) ? this.u32(BurrowAttr.FLAGS, 'FLAGS') : undefined;
  }
  candidates(): Candidate[] {
    const values = this.all(BurrowAttr.CANDIDATE);
    if (values.length > MAX_CANDIDATES) {
      this.fail({ reason: 'bad-attribute', detail: `more than ${MAX_CANDIDATES} CANDIDATE attributes` });
    }
    return values.map((v) => {
      const d = decodeCandidate(v, this.msg.transactionId);
      return d.ok ? d.candidate : this.fail({ reason: 'bad-attribute', detail: `CANDIDATE: ${d.reason}` });
    });
  }
}

/** Thrown inside `interpret` only, and always caught by `decodeMessage`. */
class DecodeFailure extends Error {
  constructor(readonly error: MessageDecodeError) {
    super(error.reason);
  }
}

// ---------------------------------------------------------------------------------------------
// The CANDIDATE attribute (docs/protocol.md, "Candidates").
//
//   0                   1                   2                   3
//  +---------------+---------------+-------------------------------+
//  |  version = 1  |  kind (1..6)  |        reserved (zero)        |
//  +---------------+---------------+-------------------------------+
//  |                     priority (u32, 1 .. 2^31-1)               |
//  +---------------------------------------------------------------+
//  |  address, encoded like XOR-MAPPED-ADDRESS (8 or 20 bytes)     |
//  +---------------------------------------------------------------+

/** Why a CANDIDATE value was rejected. */
export type CandidateDecodeError = 'bad-length' | 'unsupported-version' | 'unknown-kind' | 'reserved-not-zero' | 'bad-priority' | 'bad-address-length' | 'bad-family';

/** The highest priority RFC 8445 section 5.1.2 allows. */
export const MAX_PRIORITY = 2 ** 31 - 1;

export function encodeCandidate(c: Candidate, txid: Uint8Array): Uint8Array {
  const address = encodeXorAddress(c.endpoint, txid);
  const out = new Uint8Array(8 + address.length);
  out[0] = CANDIDATE_VERSION;
  out[1] = CANDIDATE_KIND_CODES.indexOf(c.kind) + 1;
  new DataView(out.buffer).setUint32(4, c.priority >>> 0);
  out.set(address, 8);
  return out;
}

export function decodeCandidate(value: Uint8Array, txid: Uint8Array): { ok: true; candidate: Candidate } | { ok: false; reason: CandidateDecodeError } {
  if (value.length !== 16 && value.length !== 28) return { ok: false, reason: 'bad-length' };
  // Strict: a later layout gets a new version number and older peers reject it, rather than misread it.
  if (value[0] !== CANDIDATE_VERSION) return { ok: false, reason: 'unsupported-version' };
  const kind = CANDIDATE_KIND_CODES[(value[1] ?? 0) - 1];
  if (kind === undefined) return { ok: false, reason: 'unknown-kind' };
  // Both reserved fields must be zero: ours (bytes 2-3) and the address's first byte (RFC 8489 says ignore it; we are stricter).
  if (value[2] !== 0 || value[3] !== 0 || value[8] !== 0) return { ok: false, reason: 'reserved-not-zero' };
  const priority = new DataView(value.buffer, value.byteOffset, value.length).getUint32(4);
  if (priority === 0 || priority > MAX_PRIORITY) return { ok: false, reason: 'bad-priority' };
  const address = decodeXorAddress(value.subarray(8), txid);
  if (!address.ok) return address;
  return { ok: true, candidate: { kind, priority, endpoint: address.endpoint } };
}

// ---------------------------------------------------------------------------------------------
// The RELAY attribute (docs/protocol.md, "Relay offer").
//
//   0                   1                   2                   3
//  +---------------+---------------+-------------------------------+
//  |  version = 1  | kind 0/1/2    |        reserved (zero)        |   kind: 0 none, 1 built-in, 2 TURN
//  +---------------+---------------+-------------------------------+
//  kind 2 (TURN) only:
//  |                 expiry (u64, unix seconds)                    |
//  |  URL length (u16)             |  URL (UTF-8) ...              |
//  |  username length (u16)        |  username (UTF-8) ...         |
//  |  sealed length (u16)          |  sealed password ...          |
//  +---------------------------------------------------------------+
//  sealed password = ChaCha20-Poly1305(key = relay-offer key, nonce = the message's transaction id,
//                                      aad = every byte of the value before "sealed length"), tag appended.

export const RELAY_OFFER_VERSION = 1;
const RELAY_KINDS = ['none', 'builtin', 'turn'] as const;
/** Bounds of the TURN offer's text fields, in bytes. */
export const MAX_RELAY_URL_BYTES = 255;
export const MAX_RELAY_USERNAME_BYTES = 255;
export const MAX_RELAY_PASSWORD_BYTES = 128;
const AEAD_TAG = 16;

/** Why a RELAY value was rejected. */
export type RelayOfferDecodeError = 'bad-length' | 'unsupported-version' | 'unknown-kind' | 'reserved-not-zero' | 'bad-text' | 'needs-key' | 'does-not-open';

/** Encodes a RELAY value; a TURN offer needs the network's relay-offer key (src/crypto/keys.ts `relayOffer`). */
export function encodeRelayOffer(offer: RelayOffer, txid: Uint8Array, key: Uint8Array | undefined): Uint8Array {
  const head = new Uint8Array([RELAY_OFFER_VERSION, RELAY_KINDS.indexOf(offer.kind), 0, 0]);
  if (offer.kind !== 'turn') return head;
  if (!key) throw new RangeError('a TURN relay offer needs the relay-offer key');
  const url = Buffer.from(offer.url, 'utf8');
  const user = Buffer.from(offer.username, 'utf8');
  const password = Buffer.from(offer.password, 'utf8');
  if (url.length > MAX_RELAY_URL_BYTES || user.length > MAX_RELAY_USERNAME_BYTES || password.length > MAX_RELAY_PASSWORD_BYTES) {
    throw new RangeError('TURN relay offer field too long');
  }
  const clear = Buffer.concat([head, u64(offer.expiry), len16(url.length), url, len16(user.length), user]);
  const cipher = createCipheriv('chacha20-poly1305', key, txid, { authTagLength: AEAD_TAG });
  cipher.setAAD(clear, { plaintextLength: password.length });
  const sealed = Buffer.concat([cipher.update(password), cipher.final(), cipher.getAuthTag()]);
  return Buffer.concat([clear, len16(sealed.length), sealed]);
}

function len16(n: number): Uint8Array {
  return new Uint8Array([n >> 8, n & 0xff]);
}

/**
 * Decodes a RELAY value. A TURN offer's password opens only with the relay-offer key of the network the message is
 * for: without a key the result is `needs-key`, with a wrong one `does-not-open`.
 */
export function decodeRelayOffer(value: Uint8Array, txid: Uint8Array, key: Uint8Array | undefined): { ok: true; offer: RelayOffer } | { ok: false; reason: RelayOfferDecodeError } {
  if (value.length < 4) return { ok: false, reason: 'bad-length' };
  if (value[0] !== RELAY_OFFER_VERSION) return { ok: false, reason: 'unsupported-version' };
  const kind = RELAY_KINDS[value[1] ?? 255];
  if (kind === undefined) return { ok: false, reason: 'unknown-kind' };
  if (value[2] !== 0 || value[3] !== 0) return { ok: false, reason: 'reserved-not-zero' };
  if (kind !== 'turn') return value.length === 4 ? { ok: true, offer: { kind } } : { ok: false, reason: 'bad-length' };
  const view = new DataView(value.buffer, value.byteOffset, value.length);
  let at = 12;
  if (value.length < at) return { ok: false, reason: 'bad-length' };
  const expiryBig = view.getBigUint64(4);
  if (expiryBig > BigInt(Number.MAX_SAFE_INTEGER)) return { ok: false, reason: 'bad-length' };
  const field = (max: number): Uint8Array | undefined => {
    if (value.length < at + 2) return undefined;
    const n = view.getUint16(at);
    if (n > max || value.length < at + 2 + n) return undefined;
    const out = value.subarray(at + 2, at + 2 + n);
    at += 2 + n;
    return out;
  };
  const url = field(MAX_RELAY_URL_BYTES);
  const user = field(MAX_RELAY_USERNAME_BYTES);
  if (!url || !user) return { ok: false, reason: 'bad-length' };
  const clearEnd = at;
  const sealed = field(MAX_RELAY_PASSWORD_BYTES + AEAD_TAG);
  if (!sealed || sealed.length < AEAD_TAG || at !== value.length) return { ok: false, reason: 'bad-length' };
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let urlText: string;
  let userText: string;
  try {
    urlText = decoder.decode(url);
    userText = decoder.decode(user);
  } catch {
    return { ok: false, reason: 'bad-text' };
  }
  if (!key) return { ok: false, reason: 'needs-key' };
  let password: string;
  try {
    const decipher = createDecipheriv('chacha20-poly1305', key, txid, { authTagLength: AEAD_TAG });
    const body = sealed.subarray(0, sealed.length - AEAD_TAG);
    decipher.setAAD(value.subarray(0, clearEnd), { plaintextLength: body.length });
    decipher.setAuthTag(sealed.subarray(sealed.length - AEAD_TAG));
    password = decoder.decode(Buffer.concat([decipher.update(body), decipher.final()]));
  } catch {
    return { ok: false, reason: 'does-not-open' };
  }
  return { ok: true, offer: { kind: 'turn', url: urlText, username: userText, password, expiry: Number(expiryBig) } };
}

function candidateAttributes(candidates: readonly Candidate[], txid: Uint8Array): AttributeInput[] {
  return candidates.slice(0, MAX_CANDIDATES).map((c) => ({ type: BurrowAttr.CANDIDATE, value: encodeCandidate(c, txid) }));
}

/** A one-byte code (index + 1 in its table) as a 4-byte attribute value. */
function codeValue<T>(codes: readonly T[], value: T): Uint8Array {
  return u32((codes.indexOf(value) + 1) << 24);
}

function modeAttributes(mode: PeerMode | undefined): AttributeInput[] {
  return mode !== undefined ? [{ type: BurrowAttr.MODE, value: codeValue(MODE_CODES, mode) }] : [];
}

function introAttributes(intro: Introduction, txid: Uint8Array, relayOfferKey: Uint8Array | undefined): AttributeInput[] {
  return [
    { type: BurrowAttr.PEER_NAME, value: utf8(intro.peerName) },
    { type: BurrowAttr.PEER_NONCE, value: intro.peerNonce },
    { type: Attr.XOR_PEER_ADDRESS, value: encodeXorAddress(intro.peerMapped, txid) },
    ...candidateAttributes(intro.peerCandidates, txid),
    { type: BurrowAttr.NAT_MAPPING, value: natMappingValue(intro.peerMapping, intro.peerAllocation, intro.peerFiltering) },
    ...modeAttributes(intro.peerMode),
    ...(intro.relay ? [{ type: BurrowAttr.RELAY, value: encodeRelayOffer(intro.relay, txid, relayOfferKey) }] : []),
  ];
}

function readIntro(r: Reader): Introduction {
  const relay = r.relay(r.relayOfferKey);
  const allocation = r.allocation();
  return {
    peerName: r.name(BurrowAttr.PEER_NAME, 'PEER-NAME'),
    peerNonce: r.fixed(BurrowAttr.PEER_NONCE, 'PEER-NONCE', NONCE_LENGTH),
    peerMapped: r.xorAddress(r.required(Attr.XOR_PEER_ADDRESS, 'XOR-PEER-ADDRESS'), 'XOR-PEER-ADDRESS'),
    peerCandidates: r.candidates(),
    peerMapping: r.mapping(),
    ...(relay ? { relay } : {}),
    ...(allocation !== 'unknown' ? { peerAllocation: allocation } : {}),
    ...(r.filtering() !== 'unknown' ? { peerFiltering: r.filtering() } : {}),
    ...optionalMode(r.mode()),
  };
}

function optionalMode(mode: PeerMode | undefined): { peerMode?: PeerMode } {
  return mode !== undefined ? { peerMode: mode } : {};
}

// ---------------------------------------------------------------------------------------------
// Encoding.

export interface AuthOptions {
  /** Key for MESSAGE-INTEGRITY-SHA256; omitted only for Binding and unauthenticated errors. */
  readonly key?: Uint8Array;
  readonly fingerprint?: boolean;
  readonly padTo?: number;
  /** The network's relay-offer key (src/crypto/keys.ts): seals the password of a TURN relay offer. */
  readonly relayOfferKey?: Uint8Array;
}

export function encodeMessage(msg: BurrowMessage, auth: AuthOptions = {}): Buffer {
  const opts = {
    ...(auth.key ? { integrityKey: auth.key } : {}),
    ...(auth.fingerprint ? { fingerprint: true } : {}),
    ...(auth.padTo !== undefined ? { padTo: auth.padTo } : {}),
  };
  switch (msg.kind) {
    case 'binding':
      return encodeStun(
        Method.BINDING,
        'request',
        msg.txid,
        msg.software !== undefined ? [{ type: Attr.SOFTWARE, value: utf8(msg.software) }] : [],
        { ...opts, fingerprint: msg.fingerprint },
      );
    case 'binding-ok':
      return encodeStun(Method.BINDING, 'success', msg.txid, [
        { type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress(msg.mapped, msg.txid) },
      ], opts);
    case 'register':
      return encodeStun(Method.REGISTER, 'request', msg.txid, [
        { type: BurrowAttr.NETWORK_ID, value: msg.networkId },
        { type: BurrowAttr.PEER_NAME, value: utf8(msg.name) },
        { type: BurrowAttr.TARGET_NAME, value: utf8(msg.target) },
        { type: BurrowAttr.SESSION_NONCE, value: msg.sessionNonce },
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        ...candidateAttributes(msg.candidates, msg.txid),
        { type: BurrowAttr.NAT_MAPPING, value: natMappingValue(msg.mapping, msg.allocation, msg.filtering) },
        ...(msg.transport === 'tcp' ? [{ type: BurrowAttr.TRANSPORT, value: u32(1 << 24) }] : []),
        ...modeAttributes(msg.mode),
        ...(msg.refreshMs !== undefined ? [{ type: BurrowAttr.REFRESH_INTERVAL, value: u32(msg.refreshMs) }] : []),
        ...(msg.flags !== undefined && msg.flags !== 0 ? [{ type: BurrowAttr.FLAGS, value: u32(msg.flags) }] : []),
      ], opts);
    case 'register-ok':
      return encodeStun(Method.REGISTER, 'success', msg.txid, [
        { type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress(msg.mapped, msg.txid) },
        { type: BurrowAttr.LIFETIME, value: u32(msg.lifetimeSeconds) },
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        ...(msg.alternate ? [{ type: Attr.OTHER_ADDRESS, value: encodePlainAddress(msg.alternate) }] : []),
        ...(msg.intro ? introAttributes(msg.intro, msg.txid, auth.relayOfferKey) : []),
      ], opts);
    case 'error':
      return encodeStun(msg.method, 'error', msg.txid, [
        { type: Attr.ERROR_CODE, value: encodeErrorCode(msg.code, msg.reason) },
        ...(msg.timestamp !== undefined ? [{ type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) }] : []),
      ], opts);
    case 'introduce':
      return encodeStun(Method.INTRODUCE, 'indication', msg.txid, [
        { type: BurrowAttr.NETWORK_ID, value: msg.networkId },
        { type: BurrowAttr.SESSION_NONCE, value: msg.recipientNonce },
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        ...introAttributes(msg.intro, msg.txid, auth.relayOfferKey),
      ], opts);
    case 'probe':
      return encodeStun(Method.PROBE, 'request', msg.txid, [
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        { type: BurrowAttr.FLAGS, value: u32(msg.flags) },
        { type: Attr.XOR_PEER_ADDRESS, value: encodeXorAddress(msg.destination, msg.txid) },
      ], opts);
    case 'probe-ok':
      return encodeStun(Method.PROBE, 'success', msg.txid, [
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        { type: BurrowAttr.FLAGS, value: u32(msg.flags) },
        { type: Attr.XOR_MAPPED_ADDRESS, value: encodeXorAddress(msg.mapped, msg.txid) },
      ], opts);
    case 'close':
      return encodeStun(Method.CLOSE, 'indication', msg.txid, [
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
      ], opts);
    case 'report':
      return encodeStun(Method.REPORT, 'indication', msg.txid, [
        { type: BurrowAttr.NETWORK_ID, value: msg.networkId },
        { type: BurrowAttr.PEER_NAME, value: utf8(msg.name) },
        { type: BurrowAttr.SESSION_NONCE, value: msg.sessionNonce },
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        { type: BurrowAttr.OUTCOME, value: codeValue(OUTCOME_CODES, msg.outcome) },
      ], opts);
    case 'notice':
      return encodeStun(Method.NOTICE, 'indication', msg.txid, [
        { type: BurrowAttr.NETWORK_ID, value: msg.networkId },
        { type: BurrowAttr.SESSION_NONCE, value: msg.recipientNonce },
        { type: BurrowAttr.TIMESTAMP, value: u64(msg.timestamp) },
        { type: BurrowAttr.NOTICE, value: codeValue(NOTICE_CODES, msg.notice) },
        { type: BurrowAttr.PEER_NAME, value: utf8(msg.peerName) },
        { type: BurrowAttr.PEER_NONCE, value: msg.peerNonce },
        ...(msg.outcome !== undefined ? [{ type: BurrowAttr.OUTCOME, value: codeValue(OUTCOME_CODES, msg.outcome) }] : []),
      ], opts);
  }
}

// ---------------------------------------------------------------------------------------------
// Decoding.

export interface DecodeOptions {
  /**
   * The network's relay-offer key (src/crypto/keys.ts `relayOffer`): opens the password of a TURN relay offer in an
   * introduction. Without it, an introduction with a TURN offer fails with `bad-attribute` ("RELAY: needs-key").
   */
  readonly relayOfferKey?: Uint8Array;
}

export function decodeMessage(buf: Uint8Array, options: DecodeOptions = {}): MessageDecodeResult {
  const framed = decodeStun(buf);
  if (!framed.ok) return { ok: false, reason: framed.reason };
  const stun = framed.msg;
  try {
    const msg = interpret(stun, options.relayOfferKey);
    return { ok: true, msg, stun };
  } catch (e) {
    if (e instanceof DecodeFailure) return { ok: false, ...e.error };
    throw e;
  }
}

/** `{ key: value }`, or nothing when the value is undefined (optional fields stay absent, as exactOptionalPropertyTypes wants). */
function defined<K extends string, V>(key: K, value: V | undefined): { [P in K]?: V } {
  return (value !== undefined ? { [key]: value } : {}) as { [P in K]?: V };
}

function interpret(stun: StunMessage, relayOfferKey: Uint8Array | undefined): BurrowMessage {
  const r = new Reader(stun, (e) => {
    throw new DecodeFailure(e);
  }, relayOfferKey);
  const txid = stun.transactionId;
  if (stun.cls === 'error') {
    const value = r.required(Attr.ERROR_CODE, 'ERROR-CODE');
    const err = decodeErrorCode(value);
    if (!err) return r.fail({ reason: 'bad-attribute', detail: 'ERROR-CODE is malformed' });
    const ts = r.optional(BurrowAttr.TIMESTAMP) ? r.timestamp() : undefined;
    return { kind: 'error', method: stun.method, txid, code: err.code, reason: err.reason, timestamp: ts };
  }
  const key = `${stun.method}/${stun.cls}`;
  switch (key) {
    case `${Method.BINDING}/request`:
      return { kind: 'binding', txid, fingerprint: stun.attributes.some((a) => a.type === Attr.FINGERPRINT) };
    case `${Method.BINDING}/success`: {
      const xor = r.optional(Attr.XOR_MAPPED_ADDRESS);
      if (xor) return { kind: 'binding-ok', txid, mapped: r.xorAddress(xor, 'XOR-MAPPED-ADDRESS') };
      // RFC 3489 servers answer with MAPPED-ADDRESS only.
      const plain = decodePlainAddress(r.required(Attr.MAPPED_ADDRESS, 'XOR-MAPPED-ADDRESS'));
      if (!plain.ok) return r.fail({ reason: 'bad-attribute', detail: `MAPPED-ADDRESS: ${plain.reason}` });
      return { kind: 'binding-ok', txid, mapped: plain.endpoint };
    }
    case `${Method.REGISTER}/request`:
      return {
        kind: 'register',
        txid,
        networkId: r.fixed(BurrowAttr.NETWORK_ID, 'NETWORK-ID', NETWORK_ID_LENGTH),
        name: r.name(BurrowAttr.PEER_NAME, 'PEER-NAME'),
        target: r.name(BurrowAttr.TARGET_NAME, 'TARGET-NAME'),
        sessionNonce: r.fixed(BurrowAttr.SESSION_NONCE, 'SESSION-NONCE', NONCE_LENGTH),
        timestamp: r.timestamp(),
        candidates: r.candidates(),
        mapping: r.mapping(),
        ...(r.allocation() !== 'unknown' ? { allocation: r.allocation() } : {}),
        ...(r.filtering() !== 'unknown' ? { filtering: r.filtering() } : {}),
        ...(r.transport() === 'tcp' ? { transport: 'tcp' as const } : {}),
        ...defined('mode', r.mode()),
        ...defined('refreshMs', r.refreshMs()),
        ...defined('flags', r.flags()),
      };
    case `${Method.REGISTER}/success`: {
      const other = r.optional(Attr.OTHER_ADDRESS);
      let alternate: Endpoint | undefined;
      if (other) {
        const d = decodePlainAddress(other);
        if (!d.ok) return r.fail({ reason: 'bad-attribute', detail: `OTHER-ADDRESS: ${d.reason}` });
        alternate = d.endpoint;
      }
      return {
        kind: 'register-ok',
        txid,
        mapped: r.xorAddress(r.required(Attr.XOR_MAPPED_ADDRESS, 'XOR-MAPPED-ADDRESS'), 'XOR-MAPPED-ADDRESS'),
        lifetimeSeconds: r.u32(BurrowAttr.LIFETIME, 'LIFETIME'),
        timestamp: r.timestamp(),
        alternate,
        intro: r.optional(BurrowAttr.PEER_NAME) ? readIntro(r) : undefined,
      };
    }
    case `${Method.INTRODUCE}/indication`:
      return {
        kind: 'introduce',
        txid,
        networkId: r.fixed(BurrowAttr.NETWORK_ID, 'NETWORK-ID', NETWORK_ID_LENGTH),
        recipientNonce: r.fixed(BurrowAttr.SESSION_NONCE, 'SESSION-NONCE', NONCE_LENGTH),
        timestamp: r.timestamp(),
        intro: readIntro(r),
      };
    case `${Method.PROBE}/request`:
      return {
        kind: 'probe',
        txid,
        timestamp: r.timestamp(),
        flags: r.u32(BurrowAttr.FLAGS, 'FLAGS'),
        destination: r.xorAddress(r.required(Attr.XOR_PEER_ADDRESS, 'XOR-PEER-ADDRESS'), 'XOR-PEER-ADDRESS'),
      };
    case `${Method.PROBE}/success`:
      return {
        kind: 'probe-ok',
        txid,
        timestamp: r.timestamp(),
        flags: r.u32(BurrowAttr.FLAGS, 'FLAGS'),
        mapped: r.xorAddress(r.required(Attr.XOR_MAPPED_ADDRESS, 'XOR-MAPPED-ADDRESS'), 'XOR-MAPPED-ADDRESS'),
      };
    case `${Method.CLOSE}/indication`:
      return { kind: 'close', txid, timestamp: r.timestamp() };
    case `${Method.REPORT}/indication`:
      return {
        kind: 'report',
        txid,
        networkId: r.fixed(BurrowAttr.NETWORK_ID, 'NETWORK-ID', NETWORK_ID_LENGTH),
        name: r.name(BurrowAttr.PEER_NAME, 'PEER-NAME'),
        sessionNonce: r.fixed(BurrowAttr.SESSION_NONCE, 'SESSION-NONCE', NONCE_LENGTH),
        timestamp: r.timestamp(),
        outcome: r.outcome(),
      };
    case `${Method.NOTICE}/indication`:
      return {
        kind: 'notice',
        txid,
        networkId: r.fixed(BurrowAttr.NETWORK_ID, 'NETWORK-ID', NETWORK_ID_LENGTH),
        recipientNonce: r.fixed(BurrowAttr.SESSION_NONCE, 'SESSION-NONCE', NONCE_LENGTH),
        timestamp: r.timestamp(),
        notice: r.notice(),
        peerName: r.name(BurrowAttr.PEER_NAME, 'PEER-NAME'),
        peerNonce: r.fixed(BurrowAttr.PEER_NONCE, 'PEER-NONCE', NONCE_LENGTH),
        ...defined('outcome', r.optional(BurrowAttr.OUTCOME) ? r.outcome() : undefined),
      };
    default:
      return r.fail({ reason: 'unknown-method', detail: `method 0x${stun.method.toString(16)} class ${stun.cls}` });
  }
}
