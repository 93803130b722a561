/**
 * Candidates: local transports with their candidates, and the partner's candidates, each with a kind and an
 * RFC 8445 priority; and which kind of path (LAN, direct, relay) a local transport and a remote candidate make.
 */
import { endpointKey, familyOf, type Endpoint, type Family } from '../../codec/address.js';
import { MAX_PRIORITY, type Candidate, type CandidateKind } from '../../codec/messages.js';
import type { TransportId } from '../machine.js';
import type { PunchPath, TransportKind, TransportSpec } from './types.js';

/**
 * Type preferences (RFC 8445 section 5.1.2.2 recommends host 126, peer-reflexive 110, server-reflexive 100, relayed 0).
 * A port mapping (UPnP/NAT-PMP/PCP) is a server-reflexive address the NAT promised to keep, so it ranks just above
 * srflx; a predicted port is a guess, so just below.
 */
export const TYPE_PREFERENCE: Readonly<Record<CandidateKind, number>> = {
  host: 126,
  prflx: 110,
  mapped: 105,
  srflx: 100,
  predicted: 90,
  relayed: 0,
};

/** The one component Burrow uses (RFC 8445 component ids start at 1). */
const COMPONENT_ID = 1;

/** RFC 8445 section 5.1.2.1: 2^24·type preference + 2^8·local preference + (256 − component id). */
export function candidatePriority(kind: CandidateKind, localPreference = 65535): number {
  const local = Math.max(0, Math.min(65535, Math.floor(localPreference)));
  return TYPE_PREFERENCE[kind] * 2 ** 24 + local * 2 ** 8 + (256 - COMPONENT_ID);
}

/**
 * RFC 8445 section 6.1.2.3: 2^32·MIN(G,D) + 2·MAX(G,D) + (G>D ? 1 : 0), with G the controlling side's candidate
 * priority and D the controlled side's. A bigint: the value needs 63 bits.
 */
export function pairPriority(controlling: number, controlled: number): bigint {
  const g = BigInt(controlling);
  const d = BigInt(controlled);
  const [min, max] = g < d ? [g, d] : [d, g];
  return (1n << 32n) * min + 2n * max + (g > d ? 1n : 0n);
}

/** Host candidates for a socket's addresses, the first preferred (local preference 65535, 65534, ...). */
export function asHostCandidates(endpoints: readonly Endpoint[]): Candidate[] {
  return endpoints.map((endpoint, i) => ({ kind: 'host', priority: candidatePriority('host', 65535 - i), endpoint }));
}

/** A local UDP socket as a transport spec: `local` is its bound address, `hosts` its host candidates. */
export function udpTransport(local: Endpoint, hosts: readonly Endpoint[], id: TransportId = 'udp'): TransportSpec {
  return { id, kind: 'udp', local, candidates: asHostCandidates(hosts) };
}

/** A local transport as the agent tracks it. */
export class LocalTransport {
  readonly id: TransportId;
  readonly kind: TransportKind;
  readonly local: Endpoint;
  readonly passive: boolean;
  readonly family: Family;
  private readonly list: Candidate[];

  constructor(spec: TransportSpec) {
    this.id = spec.id;
    this.kind = spec.kind;
    this.local = spec.local;
    this.passive = spec.checks === 'passive';
    this.list = [...spec.candidates];
    const first = this.list[0]?.endpoint.address ?? spec.local.address;
    this.family = familyOf(first);
  }

  get candidates(): readonly Candidate[] {
    return this.list;
  }

  /** Adds a candidate (trickle); false if it is already known. */
  addCandidate(c: Candidate): boolean {
    if (this.list.some((x) => x.endpoint.port === c.endpoint.port && x.endpoint.address === c.endpoint.address)) return false;
    this.list.push(c);
    return true;
  }

  /**
   * The priority this transport's checks stand for in pair priorities. Checks leave from the socket (the base), so
   * for a socket that is its best host candidate (RFC 8445 section 6.1.2.4 replaces a server-reflexive local
   * candidate by its base); for a relay allocation, its relayed candidate.
   */
  get priority(): number {
    const wanted: CandidateKind = this.kind === 'relay' ? 'relayed' : 'host';
    let best = 0;
    for (const c of this.list) if (c.kind === wanted && c.priority > best) best = c.priority;
    return best > 0 ? best : candidatePriority(wanted);
  }
}

/** A candidate of the partner's. */
export interface RemoteCandidate {
  readonly kind: CandidateKind;
  readonly endpoint: Endpoint;
  readonly priority: number;
  /**
   * From the server's authenticated introduction (the partner's public address or an advertised candidate), as
   * opposed to learnt from a probe's source (peer-reflexive) or predicted locally.
   */
  readonly introduced: boolean;
}

/** Upper bound on peer-reflexive candidates, so a stream of replayed probes cannot make us spray packets. */
export const MAX_PEER_REFLEXIVE = 8;

/** The partner's candidates, one per address (the first kind seen for an address wins: the server's first). */
export class RemoteCandidates {
  private readonly byKey = new Map<string, RemoteCandidate>();

  get(endpoint: Endpoint): RemoteCandidate | undefined {
    return this.byKey.get(endpointKey(endpoint));
  }

  /** Adds a candidate; returns it, or undefined when the address is already known or unusable. */
  add(kind: CandidateKind, endpoint: Endpoint, priority: number, introduced: boolean): RemoteCandidate | undefined {
    if (endpoint.port === 0) return undefined;
    const key = endpointKey(endpoint);
    if (this.byKey.has(key)) return undefined;
    const c: RemoteCandidate = { kind, endpoint, priority: Math.max(1, Math.min(MAX_PRIORITY, priority)), introduced };
    this.byKey.set(key, c);
    return c;
  }

  /** Adds a peer-reflexive candidate (RFC 8445 section 7.3.1.3), within MAX_PEER_REFLEXIVE. */
  addPeerReflexive(endpoint: Endpoint): RemoteCandidate | undefined {
    if (this.count('prflx') >= MAX_PEER_REFLEXIVE) return undefined;
    return this.add('prflx', endpoint, candidatePriority('prflx'), false);
  }

  count(kind: CandidateKind): number {
    let n = 0;
    for (const c of this.byKey.values()) if (c.kind === kind) n++;
    return n;
  }

  values(): IterableIterator<RemoteCandidate> {
    return this.byKey.values();
  }

  get size(): number {
    return this.byKey.size;
  }

  clear(): void {
    this.byKey.clear();
  }
}

/**
 * The kind of path a check from `transport` to `remote` tests: relayed when either end is a relay; LAN when the
 * remote address is one the partner advertised as its own host address (and not also its public address, which is
 * how a host without NAT looks: the server-reflexive candidate is added first and wins); direct otherwise.
 */
export function pathOf(transport: { readonly kind: TransportKind }, remote: RemoteCandidate): PunchPath {
  if (transport.kind === 'relay' || remote.kind === 'relayed') return 'relay';
  return remote.kind === 'host' ? 'lan' : 'direct';
}
