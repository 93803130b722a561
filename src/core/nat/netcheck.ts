/**
 * `burrow netcheck` as a sans-IO machine: RFC 5780 NAT behaviour discovery against any STUN server (Burrow's with
 * `--alt-address`, coturn with two listening IPs; a 1-IP server allows the mapping tests only). Time comes in with
 * every input, the driver (src/node/netcheck.ts) owns the sockets: up to three IPv4 sockets `a`, `b`, `c`, an IPv6
 * socket `v6`, and for the binding-lifetime estimate the sockets `y` and `x0`...`xN`.
 *
 * The tests run one after another, so that the NAT makes its mappings in a known order (port allocation):
 *  1. a → primary (test I): UDP gets through, the public address, OTHER-ADDRESS, RTT; with v6 → the IPv6 server;
 *  2. b → primary, 3. c → primary: new sockets' mappings (allocation);
 *  4. a → other IP, primary port (test II); 5. a → other IP and port (test III); 6. a → primary IP, other port;
 *  7. b asks for an answer from the other IP and port (EIF?), alongside a hairpin test from a to its own mapping;
 *  8. b asks for an answer from the other port (ADF?), unless 7 was answered;
 *  9. with `lifetimeTrialsMs`: each socket xi makes a mapping, and after the i-th trial time y asks the server to
 *     answer to xi's public port (RESPONSE-PORT); the first trial whose answer does not arrive bounds the lifetime.
 * Every request is padded with SOFTWARE to the length of the answer it asks for: no server amplifies for netcheck.
 */
import { endpointKey, sameEndpoint, type Endpoint } from '../../codec/address.js';
import { encodeTestRequest, readRfc5780Answer, rfc5780AnswerLength, type ChangeRequest, type Rfc5780Answer } from '../../codec/rfc5780.js';
import { decodeErrorCode, decodeStun, findAttribute, Attr, TRANSACTION_ID_LENGTH } from '../../codec/stun.js';
import { BurrowError } from '../../errors.js';
import { Backoff } from '../backoff.js';
import type { ClientMachine, DoneAction, DriverInput, EventAction, FailAction, SendAction, TransportId } from '../machine.js';
import {
  classifyAllocation,
  classifyFiltering,
  classifyMapping,
  natName,
  verdict,
  type AllocationSample,
  type FilteringBehaviour,
  type MappingBehaviour,
  type NatFacts,
  type PortAllocation,
  type Verdict,
} from './classify.js';

/** Retransmissions of every test: 250 ms doubling to 1 s, four sends, given up 2.75 s after the first. */
export const NETCHECK_BACKOFF = Backoff.exponential(250, 1000);
export const NETCHECK_SENDS = 4;
/** The hairpin test crosses only our own NAT: two sends, given up after 750 ms. */
export const HAIRPIN_SENDS = 2;

/** Default lifetime trials: seconds after the mapping was made. */
export const DEFAULT_LIFETIME_TRIALS_MS: readonly number[] = [5_000, 15_000, 30_000, 60_000, 120_000, 240_000, 480_000];

export interface NetcheckConfig {
  /** The server's primary address (IPv4, or IPv6 when it has no IPv4 address). */
  readonly server: Endpoint;
  /** The server's IPv6 address, when it has one and this host has a `v6` socket. */
  readonly server6?: Endpoint | undefined;
  /** The local address of each socket (concrete, not a wildcard), by transport id: a, b, c, v6, y, x0... */
  readonly locals: Readonly<Record<TransportId, Endpoint>>;
  /** The trial times of the lifetime estimate; absent: no estimate. One socket xi per trial. */
  readonly lifetimeTrialsMs?: readonly number[] | undefined;
  readonly randomBytes: (n: number) => Uint8Array;
}

/** The binding lifetime: alive at `aliveMs`, gone at `goneMs` (undefined: alive at every trial). */
export type LifetimeEstimate =
  | { readonly kind: 'estimate'; readonly aliveMs: number | undefined; readonly goneMs: number | undefined }
  | { readonly kind: 'unsupported'; readonly reason: string };

export interface NetcheckReport {
  readonly server: string;
  readonly udp: boolean;
  /** The socket's own address, and the public one the server saw (test I). */
  readonly local: Endpoint;
  readonly ipv4: Endpoint | undefined;
  /** The public IPv6 address; undefined when not tested (`ipv6Tested`) or not answered. */
  readonly ipv6: Endpoint | undefined;
  readonly ipv6Tested: boolean;
  /** OTHER-ADDRESS, when the server has a second IP (RFC 5780 in full). */
  readonly otherAddress: Endpoint | undefined;
  readonly mapping: MappingBehaviour;
  readonly allocation: PortAllocation;
  readonly filtering: FilteringBehaviour;
  /** Whether a packet to our own public address came back; undefined when not tested. */
  readonly hairpinning: boolean | undefined;
  readonly lifetime: LifetimeEstimate | undefined;
  /** The smallest round trip of an answer to a first send, milliseconds. */
  readonly rttMs: number;
  readonly nat: string;
  readonly verdict: Verdict;
  /** The raw observations: each test's destination and the mapping it reported (or null). */
  readonly tests: readonly { readonly name: string; readonly to: string; readonly mapped: string | null; readonly from: string | null }[];
}

export type NetcheckEvent = { readonly type: 'test'; readonly name: string; readonly answered: boolean };
export type NetcheckInput = DriverInput;
export type NetcheckAction = SendAction | EventAction<NetcheckEvent> | DoneAction<NetcheckReport> | FailAction;

type ProbeState = 'pending' | 'answered' | 'timed-out';

interface Probe {
  readonly name: string;
  readonly transport: TransportId;
  readonly to: Endpoint;
  readonly txid: Uint8Array;
  readonly data: Uint8Array;
  /** Hairpin: the probe is answered by our own request arriving, not by a server's answer. */
  self: boolean;
  /** Sends before giving up (NETCHECK_SENDS; fewer for the hairpin test, which crosses only our own NAT). */
  maxSends: number;
  /** Lifetime trial: the answer arrives on this other transport. */
  readonly answerOn: TransportId;
  sends: number;
  firstAt: number;
  nextAt: number;
  state: ProbeState;
  answer: Rfc5780Answer | undefined;
  from: Endpoint | undefined;
  /** An error answer (e.g. 420: the server does not do what was asked). */
  errorCode: number | undefined;
  rtt: number | undefined;
}

interface LifetimeTrial {
  readonly index: number;
  readonly x: TransportId;
  readonly afterMs: number;
  mapping: Probe | undefined;
  check: Probe | undefined;
  dueAt: number;
}

export class NetcheckMachine implements ClientMachine<NetcheckInput, NetcheckAction> {
  private finished = false;
  private readonly probes: Probe[] = [];
  /** The tests of the current step; the next step starts once all are settled. */
  private step: Probe[] = [];
  private stepIndex = 0;
  private readonly steps: (() => Probe[])[];
  private readonly allocation: AllocationSample[] = [];
  private t1: Probe | undefined;
  private v6: Probe | undefined;
  private other: Endpoint | undefined;
  private altPort: number;
  private readonly results = new Map<string, Probe>();
  private trials: LifetimeTrial[] = [];
  private lifetimeY: Probe | undefined;
  private lifetimeResult: LifetimeEstimate | undefined;
  private lifetimeStarted = false;

  constructor(private readonly config: NetcheckConfig) {
    this.altPort = config.server.port + 1;
    const s = config.server;
    this.steps = [
      () => [this.test('I', 'a', s), ...(config.server6 && config.locals.v6 ? [(this.v6 = this.test('ipv6', 'v6', config.server6))] : [])],
      () => (config.locals.b ? [this.test('b', 'b', s)] : []),
      () => (config.locals.c ? [this.test('c', 'c', s)] : []),
      () => (this.other ? [this.test('II', 'a', { address: this.other.address, port: s.port })] : []),
      () => (this.other ? [this.test('III', 'a', this.other)] : []),
      () => [this.test('port', 'a', { address: s.address, port: this.altPort })],
      () => [
        ...(this.other && config.locals.b ? [this.test('filter-ip-port', 'b', s, { ip: true, port: true })] : []),
        ...(this.t1?.answer ? [this.hairpin(this.t1.answer.mapped)] : []),
      ],
      () => (this.other && config.locals.b && this.results.get('filter-ip-port')?.state !== 'answered' ? [this.test('filter-port', 'b', s, { ip: false, port: true })] : []),
    ];
    this.t1 = undefined;
  }

  get isFinished(): boolean {
    return this.finished;
  }

  nextTimeoutAt(): number | undefined {
    if (this.finished) return undefined;
    let at: number | undefined;
    for (const p of this.probes) if (p.state === 'pending' && (at === undefined || p.nextAt < at)) at = p.nextAt;
    for (const t of this.trials) if (t.check === undefined && t.mapping?.state === 'answered' && (at === undefined || t.dueAt < at)) at = t.dueAt;
    return at;
  }

  handle(input: NetcheckInput): NetcheckAction[] {
    if (this.finished) return [];
    const out: NetcheckAction[] = [];
    switch (input.type) {
      case 'start':
        this.advance(input.now, out);
        break;
      case 'timer':
        this.onTimer(input.now, out);
        break;
      case 'datagram':
        this.onDatagram(input.transport, input.from, input.data, input.now, out);
        break;
      case 'transport-closed':
        break;
      case 'abort':
        this.finished = true;
        out.push({ type: 'fail', error: BurrowError.aborted() });
        break;
      default: {
        const never: never = input;
        throw new Error(`unknown input ${String(never)}`);
      }
    }
    return out;
  }

  // --- tests -----------------------------------------------------------------------------------------------------

  private test(name: string, transport: TransportId, to: Endpoint, change?: ChangeRequest, responsePort?: number, answerOn?: TransportId): Probe {
    const txid = this.config.randomBytes(TRANSACTION_ID_LENGTH);
    const family = to.address.includes(':') ? 6 : 4;
    const data = encodeTestRequest(txid, {
      ...(change ? { change } : {}),
      ...(responsePort !== undefined ? { responsePort } : {}),
      padTo: rfc5780AnswerLength(family),
    });
    const probe: Probe = { name, transport, to, txid, data, self: false, maxSends: NETCHECK_SENDS, answerOn: answerOn ?? transport, sends: 0, firstAt: 0, nextAt: 0, state: 'pending', answer: undefined, from: undefined, errorCode: undefined, rtt: undefined };
    this.results.set(name, probe);
    return probe;
  }

  private hairpin(to: Endpoint): Probe {
    const probe = this.test('hairpin', 'a', to);
    probe.self = true;
    probe.maxSends = HAIRPIN_SENDS;
    return probe;
  }

  private send(p: Probe, now: number, out: NetcheckAction[]): void {
    if (p.sends === 0) p.firstAt = now;
    p.sends++;
    p.nextAt = NETCHECK_BACKOFF.nextAt(now, p.sends);
    out.push({ type: 'send', transport: p.transport, to: p.to, data: p.data });
  }

  private startProbes(list: Probe[], now: number, out: NetcheckAction[]): void {
    for (const p of list) {
      this.results.set(p.name, p);
      this.probes.push(p);
      this.send(p, now, out);
    }
  }

  /** Starts the next step with any tests; at the end, the lifetime trials or the report. */
  private advance(now: number, out: NetcheckAction[]): void {
    while (this.stepIndex < this.steps.length) {
      const next = this.steps[this.stepIndex++]?.() ?? [];
      if (next.length > 0) {
        this.step = next;
        this.startProbes(next, now, out);
        return;
      }
    }
    if (this.config.lifetimeTrialsMs && this.config.lifetimeTrialsMs.length > 0 && !this.lifetimeStarted) {
      this.startLifetime(now, out);
      return;
    }
    if (!this.lifetimeStarted || this.lifetimeResult) this.finish(out);
  }

  private onTimer(now: number, out: NetcheckAction[]): void {
    for (const p of this.probes) {
      if (p.state !== 'pending' || now < p.nextAt) continue;
      if (p.sends >= p.maxSends) {
        p.state = 'timed-out';
        out.push({ type: 'event', event: { type: 'test', name: p.name, answered: false } });
        this.settled(p, now, out);
        if (this.finished) return;
      } else {
        this.send(p, now, out);
      }
    }
    for (const t of this.trials) {
      if (t.check === undefined && t.mapping?.state === 'answered' && now >= t.dueAt) this.startTrialCheck(t, now, out);
    }
  }

  private onDatagram(transport: TransportId, from: Endpoint, data: Uint8Array, now: number, out: NetcheckAction[]): void {
    const d = decodeStun(data);
    if (!d.ok || d.msg.method !== 0x001) return;
    const txid = Buffer.from(d.msg.transactionId);
    const p = this.probes.find((q) => q.state === 'pending' && txid.equals(q.txid));
    if (!p) return;
    if (!p.self && transport !== p.answerOn) {
      // A lifetime check answered to the socket that asked: the server ignored RESPONSE-PORT.
      if (transport === p.transport && d.msg.cls === 'success') this.endLifetime({ kind: 'unsupported', reason: 'the server ignores RESPONSE-PORT' }, out);
      return;
    }
    if (p.self) {
      if (transport !== p.transport) return;
      if (d.msg.cls !== 'request') return;
      p.from = from;
    } else if (d.msg.cls === 'error') {
      const e = findAttribute(d.msg, Attr.ERROR_CODE);
      p.errorCode = e ? decodeErrorCode(e.value)?.code ?? 0 : 0;
    } else if (d.msg.cls === 'success') {
      const a = readRfc5780Answer(d.msg);
      if (!a.ok) return;
      p.answer = a.answer;
      p.from = from;
    } else {
      return;
    }
    p.state = 'answered';
    if (p.sends === 1) p.rtt = now - p.firstAt;
    out.push({ type: 'event', event: { type: 'test', name: p.name, answered: p.errorCode === undefined } });
    this.settled(p, now, out);
  }

  /** A test finished (answered or not): take its findings, and move on once its step is done. */
  private settled(p: Probe, now: number, out: NetcheckAction[]): void {
    if (p.name === 'I') {
      if (!p.answer) {
        this.fail(out);
        return;
      }
      this.t1 = p;
      this.other = p.answer.other;
      if (p.answer.other) this.altPort = p.answer.other.port;
    }
    if (p.answer && !p.self && p.transport !== 'v6' && !p.name.startsWith('filter') && !p.name.startsWith('life')) this.noteAllocation(p.transport, p.answer.mapped);
    if (p.name.startsWith('life')) {
      this.onLifetime(p, out);
      return;
    }
    if (this.step.includes(p) && this.step.every((q) => q.state !== 'pending')) this.advance(now, out);
  }

  private readonly seen = new Map<TransportId, Endpoint[]>();

  /** Records a mapping as an allocation sample if it is new for its socket. */
  private noteAllocation(transport: TransportId, mapped: Endpoint): void {
    const local = this.config.locals[transport];
    if (!local) return;
    const seen = this.seen.get(transport) ?? [];
    if (seen.some((e) => sameEndpoint(e, mapped))) return;
    seen.push(mapped);
    this.seen.set(transport, seen);
    this.allocation.push({ local, mapped });
  }

  // --- the binding lifetime (RFC 5780 section 4.6) -------------------------------------------------------------------

  private startLifetime(now: number, out: NetcheckAction[]): void {
    this.lifetimeStarted = true;
    const trialsMs = this.config.lifetimeTrialsMs ?? [];
    if (!this.config.locals.y) {
      this.lifetimeResult = { kind: 'unsupported', reason: 'no socket for the lifetime test' };
      this.finish(out);
      return;
    }
    this.trials = trialsMs.map((afterMs, index) => ({ index, x: `x${index}`, afterMs, mapping: undefined, check: undefined, dueAt: Infinity }));
    const maps: Probe[] = [];
    for (const t of this.trials) {
      if (!this.config.locals[t.x]) continue;
      t.mapping = this.test(`life-map-${t.index}`, t.x, this.config.server);
      maps.push(t.mapping);
    }
    this.lifetimeY = this.test('life-y', 'y', this.config.server);
    this.step = [];
    this.startProbes([...maps, this.lifetimeY], now, out);
  }

  private startTrialCheck(t: LifetimeTrial, now: number, out: NetcheckAction[]): void {
    const port = t.mapping?.answer?.mapped.port ?? 0;
    t.check = this.test(`life-check-${t.index}`, 'y', this.config.server, undefined, port, t.x);
    this.startProbes([t.check], now, out);
  }

  private onLifetime(p: Probe, out: NetcheckAction[]): void {
    if (this.lifetimeResult) return;
    const y = this.lifetimeY;
    const trial = this.trials.find((t) => t.mapping === p || t.check === p);
    if (p === y || trial?.mapping === p) {
      if (p.state === 'answered' && p.answer) {
        if (trial) trial.dueAt = p.firstAt + trial.afterMs;
      }
      if (!p.answer) this.endLifetime({ kind: 'unsupported', reason: 'the server did not answer the lifetime test' }, out);
      else if (y?.answer && trial?.mapping?.answer && y.answer.mapped.address !== trial.mapping.answer.mapped.address) {
        this.endLifetime({ kind: 'unsupported', reason: 'the NAT uses more than one public address' }, out);
      }
      return;
    }
    if (!trial) return;
    if (p.errorCode !== undefined) {
      this.endLifetime({ kind: 'unsupported', reason: `the server refused RESPONSE-PORT (error ${p.errorCode})` }, out);
      return;
    }
    if (p.state === 'answered') {
      const later = this.trials.filter((t) => t.index > trial.index && t.mapping?.answer);
      if (later.length === 0) this.endLifetime({ kind: 'estimate', aliveMs: trial.afterMs, goneMs: undefined }, out);
      return;
    }
    // Gone at this trial: alive at the previous one (if any). Later trials cannot be alive either.
    const previous = this.trials.filter((t) => t.index < trial.index && t.check?.state === 'answered').at(-1);
    this.endLifetime({ kind: 'estimate', aliveMs: previous?.afterMs, goneMs: trial.afterMs }, out);
  }

  private endLifetime(result: LifetimeEstimate, out: NetcheckAction[]): void {
    this.lifetimeResult = result;
    for (const p of this.probes) if (p.state === 'pending') p.state = 'timed-out';
    this.trials = [];
    this.finish(out);
  }

  // --- the report ------------------------------------------------------------------------------------------------------

  private fail(out: NetcheckAction[]): void {
    this.finished = true;
    const server = endpointKey(this.config.server);
    out.push({
      type: 'fail',
      error: new BurrowError(
        'SERVER_UNREACHABLE',
        `no answer from the STUN server at ${server} over UDP after ${NETCHECK_SENDS} requests: UDP may be blocked on this network, or the server is down or not at that address.`,
        { details: { server, attempts: NETCHECK_SENDS } },
      ),
    });
  }

  private mapped(name: string): Endpoint | undefined {
    return this.results.get(name)?.answer?.mapped;
  }

  private answered(name: string): boolean | undefined {
    const p = this.results.get(name);
    if (!p || p.state === 'pending') return undefined;
    return p.state === 'answered' && p.errorCode === undefined;
  }

  private finish(out: NetcheckAction[]): void {
    if (this.finished) return;
    this.finished = true;
    const t1 = this.t1;
    const local = this.config.locals.a ?? { address: '0.0.0.0', port: 0 };
    const mapping = classifyMapping({
      local,
      primary: t1?.answer?.mapped ?? local,
      otherIp: this.mapped('II'),
      otherIpPort: this.mapped('III'),
      otherPort: this.mapped('port'),
    });
    const filtering = this.other ? classifyFiltering({ otherIpPort: this.answered('filter-ip-port'), otherPort: this.answered('filter-port') ?? (this.answered('filter-ip-port') ? true : undefined) }) : 'unknown';
    const allocation = mapping === 'no-nat' ? 'preserving' : classifyAllocation(this.allocation);
    const facts: NatFacts = { mapping, filtering, allocation };
    const rtts = this.probes.filter((p) => !p.self && !p.name.startsWith('life')).map((p) => p.rtt).filter((r): r is number => r !== undefined && r >= 0);
    const hair = this.results.get('hairpin');
    const report: NetcheckReport = {
      server: endpointKey(this.config.server),
      udp: true,
      local,
      ipv4: t1?.answer?.mapped,
      ipv6: this.v6?.answer?.mapped,
      ipv6Tested: this.v6 !== undefined,
      otherAddress: this.other,
      mapping,
      allocation,
      filtering,
      hairpinning: hair ? hair.state === 'answered' : undefined,
      lifetime: this.lifetimeResult,
      rttMs: rtts.length > 0 ? Math.min(...rtts) : 0,
      nat: natName(facts),
      verdict: verdict(facts),
      tests: [...this.results.values()]
        .filter((p) => !p.name.startsWith('life') && p.sends > 0)
        .map((p) => ({ name: p.name, to: endpointKey(p.to), mapped: p.answer ? endpointKey(p.answer.mapped) : null, from: p.from ? endpointKey(p.from) : null })),
    };
    out.push({ type: 'done', result: report });
  }
}
