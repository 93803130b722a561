/**
 * WireGuard over the relay, client side: the sans-IO decisions of `burrow wg --continuous` (docs/wireguard.md,
 * docs/protocol.md §10 "WireGuard over the relay"). WireGuard's own UDP socket belongs to wireguard-go or the kernel,
 * so a relayed peer gets a local endpoint instead: a loopback proxy inside `burrow wg` (src/node/udp-proxy.ts) that
 * forwards through a relay session with the partner's `burrow wg` (punchPath(), relayed paths only). The path is
 *
 *   wg ⇄ 127.0.0.1:P (this side's proxy) ⇄ TURN allocation(s) ⇄ the partner's proxy ⇄ the partner's wg
 *
 * This machine decides, per peer, from `wg show` (handshake times, endpoints) and the server's WG-SYNC records:
 *
 *  - `direct`: discovery (src/core/wg-discovery.ts) sets the peer's public endpoint. A peer that runs burrow and has
 *    no fresh handshake after `relayAfterMs` (at once when both NATs map per destination, which no direct path
 *    crosses; at once for relay mode `only`) wants a relay session.
 *  - `relaying`: the session is being set up; the direct endpoint stays, so a late direct handshake still wins.
 *  - `relayed`: the endpoint is the proxy. WireGuard roaming to another endpoint with a new handshake means the
 *    partner reached us directly: the peer moves to it (mode `auto`). When the server's record of either side
 *    changes (a peer moved to another network), a direct endpoint is tried (`trial`).
 *  - `trial`: the direct endpoint is set with a fresh handshake; one within `trialMs` keeps it (the session ends),
 *    else the proxy comes back.
 *
 * Names: each side registers for the relay under `wgRelayName(own key, peer key)`, so both sides of a pair compute the
 * same two names, and one interface holds one registration per relayed peer.
 */
import { createHash } from 'node:crypto';
import { endpointKey, type Endpoint } from '../codec/address.js';
import type { NatMapping } from '../codec/messages.js';
import type { WgDumpPeer } from '../codec/wg-dump.js';
import type { WgPeerInfo } from '../codec/wg-messages.js';
import { chooseEndpoint } from './wg-discovery.js';

/** `auto`: relay a peer with no direct path, move back to direct when one appears; `never`; `only`: relay every peer. */
export type WgRelayMode = 'auto' | 'never' | 'only';

export interface WgRelayTiming {
  /** A peer with a direct endpoint and no handshake for this long gets a relay session. */
  readonly relayAfterMs: number;
  /** A direct endpoint tried while relayed must bring a handshake within this long, else the proxy comes back. */
  readonly trialMs: number;
  /** A relay session that failed or ended is started again after this long, doubled after each failure in a row. */
  readonly retryMs: number;
  /** The longest pause between attempts. */
  readonly maxRetryMs: number;
}

/** The defaults for a WG-SYNC interval of `intervalMs`: the two sides learn each other's endpoints up to one interval apart. */
export function defaultWgRelayTiming(intervalMs: number): WgRelayTiming {
  return { relayAfterMs: intervalMs + 5000, trialMs: intervalMs + 5000, retryMs: 5000, maxRetryMs: 60_000 };
}

/** The registration name for the relay session from `own` to `peer` (base64 WireGuard keys): 'wg-' and 22 characters. */
export function wgRelayName(own: string, peer: string): string {
  return `wg-${createHash('sha256').update(`burrow/v1 wg-relay\0${own}\0${peer}`).digest('base64url').slice(0, 22)}`;
}

export type WgRelayState = 'direct' | 'relaying' | 'relayed' | 'trial';

export type WgRelayAction =
  /** Start a relay session for this peer (punchPath with relayed paths only; its proxy talks to WireGuard's port). */
  | { readonly type: 'start-session'; readonly key: string }
  /** End the peer's relay session (it moved to a direct path). */
  | { readonly type: 'stop-session'; readonly key: string }
  /**
   * Set the peer's endpoint. `rehandshake`: re-create the peer so that WireGuard drops its session and handshakes at
   * once (its latest-handshake reads 0 until then: how a trial tells a new handshake from an old one).
   */
  | { readonly type: 'set-endpoint'; readonly key: string; readonly endpoint: Endpoint; readonly rehandshake: boolean }
  /** The path changed (for the log): `relay` through the proxy, `direct` to the peer's own address. */
  | { readonly type: 'path'; readonly key: string; readonly path: 'relay' | 'direct'; readonly endpoint: Endpoint; readonly reason: WgPathReason };

export type WgPathReason =
  /** No direct handshake within relayAfterMs, or both NATs map per destination, or mode `only`. */
  | 'no-direct-path'
  /** WireGuard roamed: the partner's packets reached us directly. */
  | 'roamed'
  /** A tried direct endpoint brought a handshake. */
  | 'upgrade'
  /** A tried direct endpoint brought none: back to the relay. */
  | 'trial-failed'
  /** A new relay session (the previous one ended, or WireGuard lost the endpoint). */
  | 'relay-restored';

interface PeerPlan {
  state: WgRelayState;
  /** direct: since when it has had no fresh handshake while the peer runs burrow and the server sees it. */
  unconnectedSince: number | undefined;
  /** A session was asked for and has not ended. */
  session: boolean;
  /** The session's proxy address, once ready. */
  proxy: Endpoint | undefined;
  /** Every proxy of this peer's sessions since it left the direct path: WireGuard may still point at an old one. */
  readonly proxies: Set<string>;
  /** relaying: start the session (again) at this time. */
  retryAt: number;
  /** The server's facts about the pair when the relay was set: a change makes a direct endpoint worth trying. */
  facts: string;
  trialStart: number;
  trialEndpoint: Endpoint | undefined;
  /** The path was relayed before (a new session is a restoration, not a first relay). */
  wasRelayed: boolean;
  /** Sessions in a row that ended without a path (the partner does not relay, the server offers no relay). */
  failures: number;
}

export interface WgRelayInput {
  /** The peers burrow discovers (WgDiscovery.targets). */
  readonly peers: readonly WgDumpPeer[];
  /** The server's latest record of each peer, by base64 key. */
  readonly infoOf: (key: string) => WgPeerInfo | undefined;
  /** The server's record of this interface. */
  readonly self: WgPeerInfo | undefined;
  /** This interface's NAT mapping (as classified against the server's two ports). */
  readonly mapping: NatMapping;
  /** This host's LAN addresses (for a LAN endpoint of a peer behind the same NAT). */
  readonly ours?: readonly Endpoint[];
  readonly now: number;
}

function fresh(peer: WgDumpPeer, now: number): boolean {
  // handshakeFresh, kept local: WireGuard's REJECT_AFTER_TIME.
  return peer.latestHandshake > 0 && now - peer.latestHandshake * 1000 < 180_000;
}

function same(a: Endpoint | undefined, b: Endpoint | undefined): boolean {
  return a !== undefined && b !== undefined && endpointKey(a) === endpointKey(b);
}

export class WgRelayPlanner {
  private readonly plans = new Map<string, PeerPlan>();

  constructor(
    private readonly mode: WgRelayMode,
    private readonly timing: WgRelayTiming,
  ) {}

  /** Peers whose endpoint this machine manages now (discovery must leave them alone). */
  held(): Set<string> {
    const out = new Set<string>();
    for (const [key, p] of this.plans) if (p.state === 'relayed' || p.state === 'trial') out.add(key);
    return out;
  }

  stateOf(key: string): WgRelayState {
    return this.plans.get(key)?.state ?? 'direct';
  }

  /** The proxy a relayed peer's endpoint points at. */
  proxyOf(key: string): Endpoint | undefined {
    return this.plans.get(key)?.proxy;
  }

  /** The session for `key` agreed on a relayed path; its proxy listens at `proxy`. */
  sessionReady(key: string, proxy: Endpoint): void {
    const p = this.plans.get(key);
    if (!p?.session) return;
    p.proxy = proxy;
    p.proxies.add(endpointKey(proxy));
    p.failures = 0;
  }

  /** The session for `key` failed, or ended (the partner left, the relay was lost). */
  sessionEnded(key: string, now: number): void {
    const p = this.plans.get(key);
    if (!p) return;
    if (p.state === 'relaying' && !p.proxy) p.failures++;
    p.session = false;
    p.proxy = undefined;
    if (p.state === 'relayed' || p.state === 'trial' || p.state === 'relaying') {
      p.wasRelayed ||= p.state !== 'relaying';
      p.state = 'relaying';
      p.retryAt = now + Math.min(this.timing.maxRetryMs, this.timing.retryMs * 2 ** Math.max(0, p.failures - 1));
    }
  }

  /** One look at the interface: what to do now. */
  step(input: WgRelayInput): WgRelayAction[] {
    if (this.mode === 'never') return [];
    const out: WgRelayAction[] = [];
    const { now } = input;
    const present = new Set(input.peers.map((p) => p.publicKey));
    // A peer removed from the interface: end its session.
    for (const [key, p] of this.plans) {
      if (present.has(key)) continue;
      if (p.session) out.push({ type: 'stop-session', key });
      this.plans.delete(key);
    }
    for (const peer of input.peers) {
      const key = peer.publicKey;
      let p = this.plans.get(key);
      if (!p) {
        p = { state: 'direct', unconnectedSince: undefined, session: false, proxy: undefined, proxies: new Set(), retryAt: -Infinity, facts: '', trialStart: 0, trialEndpoint: undefined, wasRelayed: false, failures: 0 };
        this.plans.set(key, p);
      }
      const info = input.infoOf(key);
      const factsNow = this.facts(info, input);
      const hopeless = info?.mapping === 'endpoint-dependent' && input.mapping === 'endpoint-dependent';
      switch (p.state) {
        case 'direct': {
          if (this.mode === 'auto' && fresh(peer, now)) {
            p.unconnectedSince = undefined;
            break;
          }
          if (this.mode === 'auto') {
            // Only a peer that runs burrow (announced) can answer a relay session.
            if (!info?.announced || !info.endpoint) {
              p.unconnectedSince = undefined;
              break;
            }
            p.unconnectedSince ??= now;
            if (!hopeless && now - p.unconnectedSince < this.timing.relayAfterMs) break;
          }
          p.state = 'relaying';
          p.retryAt = now;
          p.facts = factsNow;
          this.startIfDue(p, key, now, out);
          break;
        }
        case 'relaying': {
          if (this.mode === 'auto' && fresh(peer, now) && peer.endpoint && !p.proxies.has(endpointKey(peer.endpoint))) {
            // A direct handshake came while the session was being set up (or set up again): keep the direct path.
            if (p.session) out.push({ type: 'stop-session', key });
            if (p.wasRelayed) out.push({ type: 'path', key, path: 'direct', endpoint: peer.endpoint, reason: 'roamed' });
            this.toDirect(p);
            break;
          }
          if (p.proxy) {
            p.state = 'relayed';
            p.facts = factsNow;
            // A session's keys do not depend on the path: the endpoint alone moves it (no re-handshake, no gap).
            out.push({ type: 'set-endpoint', key, endpoint: p.proxy, rehandshake: false });
            out.push({ type: 'path', key, path: 'relay', endpoint: p.proxy, reason: p.wasRelayed ? 'relay-restored' : 'no-direct-path' });
            p.wasRelayed = true;
            break;
          }
          this.startIfDue(p, key, now, out);
          break;
        }
        case 'relayed': {
          const proxy = p.proxy;
          if (!proxy) break;
          if (!same(peer.endpoint, proxy)) {
            if (this.mode === 'auto' && peer.endpoint && fresh(peer, now) && !p.proxies.has(endpointKey(peer.endpoint))) {
              // WireGuard roamed: an authenticated packet from the partner came straight from its address.
              out.push({ type: 'stop-session', key });
              out.push({ type: 'path', key, path: 'direct', endpoint: peer.endpoint, reason: 'roamed' });
              this.toDirect(p);
            } else {
              // WireGuard lost the proxy endpoint (restarted, or set by hand): set it again.
              out.push({ type: 'set-endpoint', key, endpoint: proxy, rehandshake: false });
            }
            break;
          }
          if (this.mode === 'auto' && factsNow !== p.facts && !hopeless && info) {
            p.facts = factsNow;
            const choice = chooseEndpoint(input.self, info, input.ours ?? []);
            if (choice) {
              p.state = 'trial';
              p.trialStart = now;
              p.trialEndpoint = choice.endpoint;
              out.push({ type: 'set-endpoint', key, endpoint: choice.endpoint, rehandshake: true });
            }
          }
          break;
        }
        case 'trial': {
          const proxy = p.proxy;
          if (!proxy) break;
          // The re-created peer reads latest-handshake 0 until its first new handshake.
          if (fresh(peer, now) && peer.endpoint && !p.proxies.has(endpointKey(peer.endpoint))) {
            out.push({ type: 'stop-session', key });
            out.push({ type: 'path', key, path: 'direct', endpoint: peer.endpoint, reason: 'upgrade' });
            this.toDirect(p);
            break;
          }
          if (fresh(peer, now) && peer.endpoint && p.proxies.has(endpointKey(peer.endpoint))) {
            // The partner's handshake came through the relay first, and WireGuard roamed back to the proxy.
            p.state = 'relayed';
            break;
          }
          if (now - p.trialStart >= this.timing.trialMs) {
            p.state = 'relayed';
            p.facts = factsNow;
            out.push({ type: 'set-endpoint', key, endpoint: proxy, rehandshake: true });
            out.push({ type: 'path', key, path: 'relay', endpoint: proxy, reason: 'trial-failed' });
          }
          break;
        }
      }
    }
    return out;
  }

  private startIfDue(p: PeerPlan, key: string, now: number, out: WgRelayAction[]): void {
    if (p.session || now < p.retryAt) return;
    p.session = true;
    out.push({ type: 'start-session', key });
  }

  private toDirect(p: PeerPlan): void {
    p.state = 'direct';
    p.session = false;
    p.proxy = undefined;
    p.proxies.clear();
    p.unconnectedSince = undefined;
    p.wasRelayed = false;
    p.trialEndpoint = undefined;
  }

  /** What the server says about the pair, as far as a direct path depends on it. */
  private facts(info: WgPeerInfo | undefined, input: WgRelayInput): string {
    const e = (x: Endpoint | undefined): string => (x ? endpointKey(x) : '-');
    return `${e(info?.endpoint)}|${info?.mapping ?? '-'}|${e(input.self?.endpoint)}|${input.mapping}`;
  }
}
