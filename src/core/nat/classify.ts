/**
 * NAT classification, pure: the one place that turns what STUN servers reported into RFC 4787 behaviour (mapping,
 * port allocation, filtering) and into what it means for a punch. Used by `burrow netcheck` (netcheck.ts, the full
 * RFC 5780 test), by every connect (the cheap mapping test at registration, src/core/punch/nat-probe.ts, whose
 * findings travel to the partner in NAT-MAPPING), by the failure diagnosis (src/core/punch/failure.ts) and by
 * WireGuard endpoint discovery (src/core/wg-discovery.ts).
 */
import { sameEndpoint, type Endpoint } from '../../codec/address.js';
import type { NatFiltering, NatMapping, PortAllocation } from '../../codec/messages.js';

/**
 * How a NAT maps one local socket to public addresses (RFC 4787 section 4.1, RFC 5780 section 4.3).
 * `endpoint-dependent`: the mapping changed with the destination port, and no second server IP was there to tell
 * address-dependent from address-and-port-dependent.
 */
export type MappingBehaviour =
  | 'no-nat'
  | 'endpoint-independent'
  | 'address-dependent'
  | 'address-and-port-dependent'
  | 'endpoint-dependent'
  | 'unknown';

/** Which unsolicited senders the NAT or firewall lets through to an open mapping (RFC 4787 section 5). */
export type FilteringBehaviour = NatFiltering;

export type { PortAllocation };

/** The lab's NAT kinds, which are also the kinds of peer the verdict speaks of. */
export type PeerKind = 'full-cone' | 'address-restricted' | 'port-restricted' | 'symmetric' | 'firewall';
export const PEER_KINDS: readonly PeerKind[] = ['full-cone', 'address-restricted', 'port-restricted', 'symmetric', 'firewall'];

/** What one side knows of its NAT. */
export interface NatFacts {
  readonly mapping: MappingBehaviour;
  readonly filtering: FilteringBehaviour;
  readonly allocation: PortAllocation;
}

export const UNKNOWN_FACTS: NatFacts = { mapping: 'unknown', filtering: 'unknown', allocation: 'unknown' };

/** The facts of each lab kind, as RFC 4787 names them. */
export const KIND_FACTS: Readonly<Record<PeerKind, NatFacts>> = {
  'full-cone': { mapping: 'endpoint-independent', filtering: 'endpoint-independent', allocation: 'preserving' },
  'address-restricted': { mapping: 'endpoint-independent', filtering: 'address-dependent', allocation: 'preserving' },
  'port-restricted': { mapping: 'endpoint-independent', filtering: 'address-and-port-dependent', allocation: 'preserving' },
  symmetric: { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'random' },
  firewall: { mapping: 'no-nat', filtering: 'address-and-port-dependent', allocation: 'preserving' },
};

/** The mappings one local socket got toward the server's addresses (RFC 5780 tests I-III, and a port-only test). */
export interface MappingSamples {
  /** The socket's own address, when known (not a wildcard): equal to `primary` means no NAT. */
  readonly local?: Endpoint | undefined;
  /** Toward the primary address and port. */
  readonly primary: Endpoint;
  /** Toward the other IP, primary port (test II). */
  readonly otherIp?: Endpoint | undefined;
  /** Toward the other IP and other port (test III). */
  readonly otherIpPort?: Endpoint | undefined;
  /** Toward the primary IP, other port (all a 1-IP server offers). */
  readonly otherPort?: Endpoint | undefined;
}

export function classifyMapping(s: MappingSamples): MappingBehaviour {
  if (s.local !== undefined && sameEndpoint(s.local, s.primary)) return 'no-nat';
  if (s.otherIp !== undefined) {
    if (sameEndpoint(s.otherIp, s.primary)) {
      // Test III may still show a port-only dependence (rare): then the mapping depends on the destination.
      if (s.otherPort !== undefined && !sameEndpoint(s.otherPort, s.primary)) return 'address-and-port-dependent';
      return 'endpoint-independent';
    }
    if (s.otherIpPort !== undefined) return sameEndpoint(s.otherIpPort, s.otherIp) ? 'address-dependent' : 'address-and-port-dependent';
    return 'endpoint-dependent';
  }
  if (s.otherPort !== undefined) return sameEndpoint(s.otherPort, s.primary) ? 'endpoint-independent' : 'address-and-port-dependent';
  return 'unknown';
}

/**
 * RFC 5780 section 4.4 (with erratum 7971): `otherIpPort` — an answer from the other IP and port arrived;
 * `otherPort` — an answer from the primary IP, other port arrived. Undefined: the test did not run.
 */
export function classifyFiltering(answered: { readonly otherIpPort?: boolean | undefined; readonly otherPort?: boolean | undefined }): FilteringBehaviour {
  if (answered.otherIpPort === true) return 'endpoint-independent';
  if (answered.otherPort === true) return 'address-dependent';
  if (answered.otherIpPort === false && answered.otherPort === false) return 'address-and-port-dependent';
  return 'unknown';
}

/** A new mapping, in the order the NAT made them: the local socket and the public address it got. */
export interface AllocationSample {
  readonly local: Endpoint;
  readonly mapped: Endpoint;
}

/** The largest step between two consecutive new mappings that still counts as sequential allocation. */
export const SEQUENTIAL_MAX_STEP = 16;

/**
 * How the NAT picks public ports for new mappings: `preserving` when each keeps its local port, `sequential` when
 * consecutive new mappings get close, increasing ports, else `random`. `samples` must be in the order the mappings
 * were made and each a new mapping (a new socket, or a new destination of a destination-dependent NAT).
 */
export function classifyAllocation(samples: readonly AllocationSample[]): PortAllocation {
  if (samples.length === 0) return 'unknown';
  if (samples.every((s) => s.mapped.port === s.local.port)) return 'preserving';
  if (samples.length < 2) return 'unknown';
  let sequential = true;
  for (let i = 1; i < samples.length; i++) {
    const step = (samples[i]?.mapped.port ?? 0) - (samples[i - 1]?.mapped.port ?? 0);
    if (step < 1 || step > SEQUENTIAL_MAX_STEP) sequential = false;
  }
  return sequential ? 'sequential' : 'random';
}

/** Whether the mapping of one local socket changes with the destination (a "hard" NAT). */
export function isHard(m: MappingBehaviour): boolean {
  return m === 'address-dependent' || m === 'address-and-port-dependent' || m === 'endpoint-dependent';
}

/** The mapping as it travels in NAT-MAPPING (src/codec/messages.ts). */
export function wireMapping(m: MappingBehaviour): NatMapping {
  if (m === 'unknown') return 'unknown';
  return isHard(m) ? 'endpoint-dependent' : 'endpoint-independent';
}

/** The facts a partner reported (NAT-MAPPING), as well as they can be known. */
export function factsFromWire(mapping: NatMapping, allocation: PortAllocation = 'unknown', filtering: NatFiltering = 'unknown'): NatFacts {
  const m: MappingBehaviour = mapping === 'endpoint-dependent' ? 'endpoint-dependent' : mapping;
  return { mapping: m, filtering, allocation };
}

/** How a pair can connect: a plain punch, birthday probing (one hard side), or only through a relay. */
export type PairPath = 'direct' | 'birthday' | 'relay';

/**
 * What a punch between two sides can achieve. Unknown filtering counts as the strictest (address-and-port-
 * dependent); unknown mapping as easy (the punch is tried anyway).
 */
export function pairPath(a: NatFacts, b: NatFacts): PairPath {
  const hardA = isHard(a.mapping);
  const hardB = isHard(b.mapping);
  if (!hardA && !hardB) return 'direct';
  if (hardA && hardB) return 'relay';
  const easy = hardA ? b : a;
  // The easy side learns the hard side's new port from its first packet only if its filter lets that packet in.
  if (easy.filtering === 'endpoint-independent' || easy.filtering === 'address-dependent') return 'direct';
  return 'birthday';
}

export interface Verdict {
  readonly direct: readonly PeerKind[];
  readonly birthday: readonly PeerKind[];
  readonly relay: readonly PeerKind[];
  /** One line for people. */
  readonly line: string;
}

/** Which kinds of peer this side reaches directly, with birthday probing, or only through the relay. */
export function verdict(ours: NatFacts, udp = true): Verdict {
  if (!udp) return { direct: [], birthday: [], relay: [...PEER_KINDS], line: 'UDP does not get through: every peer needs the relay (over TCP)' };
  const direct: PeerKind[] = [];
  const birthday: PeerKind[] = [];
  const relay: PeerKind[] = [];
  for (const kind of PEER_KINDS) {
    const path = pairPath(ours, KIND_FACTS[kind]);
    (path === 'direct' ? direct : path === 'birthday' ? birthday : relay).push(kind);
  }
  const list = (k: readonly PeerKind[]): string => k.join(', ');
  const parts: string[] = [];
  if (direct.length === PEER_KINDS.length) parts.push('direct to every kind of peer');
  else if (direct.length > 0) parts.push(`direct to ${list(direct)} peers`);
  if (birthday.length > 0) parts.push(`${list(birthday)} peers need birthday probing (else the relay)`);
  if (relay.length > 0) parts.push(`${list(relay)} peers need the relay`);
  const note = ours.filtering === 'unknown' && !isHard(ours.mapping) && ours.mapping !== 'unknown'
    ? ' (filtering unknown: assumed address-and-port-dependent; a server with --alt-address tells)'
    : ours.mapping === 'unknown' ? ' (mapping unknown: the server offers no second address or port)' : '';
  return { direct, birthday, relay, line: parts.join('; ') + note };
}

/** Short names, as people say them: "port-restricted cone", "symmetric". */
export function natName(f: NatFacts): string {
  if (f.mapping === 'no-nat') return f.filtering === 'endpoint-independent' ? 'open internet (no NAT, no filter)' : 'no NAT (a firewall filters)';
  if (isHard(f.mapping)) return 'symmetric NAT';
  if (f.mapping === 'unknown') return 'unknown';
  switch (f.filtering) {
    case 'endpoint-independent':
      return 'full-cone NAT';
    case 'address-dependent':
      return 'address-restricted cone NAT';
    case 'address-and-port-dependent':
      return 'port-restricted cone NAT';
    case 'unknown':
      return 'cone NAT (filtering unknown)';
  }
}
