/**
 * WireGuard endpoint discovery, client side: sans-IO decisions. The driver (src/node/wg.ts) feeds it the interface as
 * `wg show IFACE dump` describes it and what the server reported in WG-SYNC; it answers which endpoints to set and,
 * at the deadline, why each peer failed. Time is passed in (milliseconds); WireGuard's handshake times are seconds.
 */
import { endpointKey, familyOf, type Endpoint } from '../codec/address.js';
import type { WgDump, WgDumpPeer } from '../codec/wg-dump.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';

/** WireGuard's REJECT_AFTER_TIME: a handshake older than this no longer carries traffic. */
export const HANDSHAKE_FRESH_MS = 180_000;
/** After setting an endpoint, wait this long before setting the same one again. */
const RESET_HOLD_OFF_MS = 5_000;

export type WgPeerProblem = 'not-registered' | 'peer-not-reaching-server' | 'symmetric-peer' | 'symmetric-self' | 'no-handshake';

export type WgPeerStatus = 'connected' | 'waiting' | WgPeerProblem;

export interface WgSetEndpoint {
  readonly key: string;
  readonly endpoint: Endpoint;
  /** Why: first discovery, the peer moved, or WireGuard's endpoint went stale. */
  readonly reason: 'discovered' | 'moved' | 'stale';
  /** The address is the peer's LAN address (both behind the same NAT). */
  readonly lan: boolean;
  /**
   * Re-create the peer so that WireGuard starts a new handshake at once: the peer moved, so the current session is
   * most likely dead on its side (a restarted WireGuard has forgotten it), and WireGuard would otherwise keep sending
   * on it until its own timers expire.
   */
  readonly rehandshake: boolean;
}

export interface WgTargets {
  /** Peers whose endpoint burrow discovers. */
  readonly peers: readonly WgDumpPeer[];
  /** Peers configured with an endpoint on the rendezvous server's host: left alone. */
  readonly serverHost: readonly WgDumpPeer[];
}

interface PeerMemory {
  applied: string | undefined;
  setAt: number;
  info: WgPeerInfo | undefined;
  /** The applied endpoint is a LAN address. */
  appliedLan: boolean;
  /** A LAN address was tried without a handshake: use the public endpoint from now on. */
  lanFailed: boolean;
}

export function handshakeFresh(peer: WgDumpPeer | undefined, now: number): boolean {
  return peer !== undefined && peer.latestHandshake > 0 && now - peer.latestHandshake * 1000 < HANDSHAKE_FRESH_MS;
}

/** Whether two addresses share a /24 (IPv4) or /64 (IPv6): a cheap "same LAN" guess. */
function sameSubnet(a: string, b: string): boolean {
  if (familyOf(a) !== familyOf(b)) return false;
  if (familyOf(a) === 4) return a.split('.').slice(0, 3).join('.') === b.split('.').slice(0, 3).join('.');
  const head = (x: string): string => x.split(':').slice(0, 4).join(':');
  return head(a) === head(b);
}

/**
 * The address to give WireGuard for a peer: its LAN address when both sit behind the same public address (NATs
 * rarely hairpin) — preferably one on a subnet of ours — else where the server saw its WireGuard packets come from.
 * `lan: false` forces the public endpoint (the LAN address was tried and led to no handshake: a carrier-grade NAT
 * shared by two different LANs, or a LAN address of some other interface).
 */
export function chooseEndpoint(
  self: WgPeerInfo | undefined,
  peer: WgPeerInfo,
  ours: readonly Endpoint[] = [],
  lan = true,
): { endpoint: Endpoint; lan: boolean } | undefined {
  if (!peer.endpoint) return undefined;
  if (lan && self?.endpoint && self.endpoint.address === peer.endpoint.address) {
    const family = familyOf(peer.endpoint.address);
    const sameFamily = peer.hosts.filter((h) => familyOf(h.address) === family);
    const host = sameFamily.find((h) => ours.some((o) => sameSubnet(o.address, h.address))) ?? sameFamily[0] ?? peer.hosts[0];
    if (host) return { endpoint: host, lan: true };
  }
  return { endpoint: peer.endpoint, lan: false };
}

/** A LAN address that has not led to a handshake within this time is given up for the public endpoint. */
export const LAN_FALLBACK_MS = 10_000;

export class WgDiscovery {
  private readonly memory = new Map<string, PeerMemory>();
  private self: WgPeerInfo | undefined;

  constructor(
    private readonly config: {
      /** The server's WireGuard public key (base64). */
      readonly serverKey: string;
      /** The rendezvous server's IP address. */
      readonly serverAddress: string;
      /** With several servers (`--server S1,S2`): every server's IP address (peers on any of these hosts are left alone). */
      readonly serverAddresses?: readonly string[];
    },
  ) {}

  /** Splits the interface's peers into the ones to discover and the ones on the server's own host. */
  targets(dump: WgDump): WgTargets {
    const peers: WgDumpPeer[] = [];
    const serverHost: WgDumpPeer[] = [];
    for (const p of dump.peers) {
      if (p.publicKey === this.config.serverKey) continue;
      const address = p.endpoint?.address;
      if (address !== undefined && (address === this.config.serverAddress || this.config.serverAddresses?.includes(address) === true)) serverHost.push(p);
      else peers.push(p);
    }
    return { peers, serverHost };
  }

  /** The server's record of this interface, from the latest WG-SYNC. */
  get selfInfo(): WgPeerInfo | undefined {
    return this.self;
  }

  infoOf(key: string): WgPeerInfo | undefined {
    return this.memory.get(key)?.info;
  }

  /**
   * Takes a WG-SYNC answer into account and returns the endpoints to set now. Peers in `held` (relayed: their
   * endpoint is burrow's proxy, src/core/wg-relay.ts) are recorded but left alone; once released they are set again.
   */
  update(dump: WgDump, self: WgPeerInfo, infos: ReadonlyMap<string, WgPeerInfo>, now: number, ours: readonly Endpoint[] = [], held: ReadonlySet<string> = new Set()): WgSetEndpoint[] {
    this.self = self;
    const out: WgSetEndpoint[] = [];
    for (const peer of this.targets(dump).peers) {
      let mem = this.memory.get(peer.publicKey);
      if (!mem) this.memory.set(peer.publicKey, (mem = { applied: undefined, setAt: -Infinity, info: undefined, appliedLan: false, lanFailed: false }));
      const info = infos.get(peer.publicKey);
      if (info) mem.info = info;
      if (!info) continue;
      if (mem.appliedLan && !mem.lanFailed && !handshakeFresh(peer, now) && now - mem.setAt >= LAN_FALLBACK_MS) mem.lanFailed = true;
      const choice = chooseEndpoint(self, info, ours, !mem.lanFailed);
      if (!choice) continue;
      const desired = endpointKey(choice.endpoint);
      if (held.has(peer.publicKey)) {
        // Relayed: recorded as if set, so that once the relay lets go a working endpoint (WireGuard roamed to it)
        // stays, and a dead one (the proxy) is replaced.
        mem.applied = desired;
        mem.appliedLan = choice.lan;
        mem.setAt = now;
        continue;
      }
      const current = peer.endpoint ? endpointKey(peer.endpoint) : undefined;
      let reason: WgSetEndpoint['reason'] | undefined;
      if (mem.applied !== desired && mem.applied !== undefined && info.mapping === 'endpoint-dependent' && handshakeFresh(peer, now)) {
        // Behind a symmetric NAT the server only ever sees the port for the server; the working endpoint is the one
        // WireGuard roamed to from the peer's own packets. Leave it while it carries handshakes.
        mem.applied = desired;
      } else if (mem.applied !== desired) {
        // The server's view changed (or this is the first one): follow it, unless WireGuard already uses it.
        reason = mem.applied === undefined ? 'discovered' : 'moved';
        if (current === desired) {
          mem.applied = desired;
          reason = undefined;
        }
      } else if (current !== desired && !handshakeFresh(peer, now) && (current === undefined || now - mem.setAt >= RESET_HOLD_OFF_MS)) {
        // WireGuard roamed or lost the endpoint (a restart) and no handshake keeps it alive: set it again.
        reason = 'stale';
      }
      if (reason) {
        mem.applied = desired;
        mem.appliedLan = choice.lan;
        mem.setAt = now;
        out.push({ key: peer.publicKey, endpoint: choice.endpoint, reason, lan: choice.lan, rehandshake: reason === 'moved' });
      }
    }
    return out;
  }

  /** Where each target peer stands. `final`: the deadline has passed, so name the problem instead of 'waiting'. */
  status(dump: WgDump, now: number, final: boolean): Map<string, WgPeerStatus> {
    const out = new Map<string, WgPeerStatus>();
    for (const peer of this.targets(dump).peers) {
      if (handshakeFresh(peer, now)) {
        out.set(peer.publicKey, 'connected');
        continue;
      }
      if (!final) {
        out.set(peer.publicKey, 'waiting');
        continue;
      }
      const info = this.memory.get(peer.publicKey)?.info;
      if (!info || (!info.announced && !info.endpoint)) out.set(peer.publicKey, 'not-registered');
      else if (!info.endpoint) out.set(peer.publicKey, 'peer-not-reaching-server');
      else if (info.mapping === 'endpoint-dependent') out.set(peer.publicKey, 'symmetric-peer');
      else if (this.self?.mapping === 'endpoint-dependent') out.set(peer.publicKey, 'symmetric-self');
      else out.set(peer.publicKey, 'no-handshake');
    }
    return out;
  }
}

/** The order in which problems are reported when peers fail differently: the first is the exit code. */
export const PROBLEM_ORDER: readonly WgPeerProblem[] = ['not-registered', 'peer-not-reaching-server', 'symmetric-peer', 'symmetric-self', 'no-handshake'];
