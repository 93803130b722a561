/**
 * `discoverWireGuard()`: finds and sets the endpoints of a WireGuard interface's peers through the rendezvous server,
 * without raw sockets and without touching WireGuard's port (docs/wireguard.md).
 *
 *  1. Read the interface with `wg show IFACE dump`.
 *  2. Add the server as a WireGuard peer (its key and preshared key derive from the network secret, allowed-ips
 *     empty so no traffic is routed to it). WireGuard then handshakes with the server *from its own port*; the
 *     server reads the public mapping of that port off the authenticated handshake.
 *  3. WG-SYNC over a separate UDP socket: announce this interface (bound to its key by a proof only the holder of the
 *     private key can compute), learn whether the NAT's mapping depends on the destination, and ask for the peers'
 *     endpoints.
 *  4. `wg set IFACE peer KEY endpoint IP:PORT persistent-keepalive 25` for each peer; wait for handshakes (one-shot)
 *     or keep watching and re-resolving (continuous).
 *
 * A quiet library: no output (events go to `onEvent`), no process.exit, every socket, child and timer released,
 * AbortSignal honoured.
 */
import { execFile } from 'node:child_process';
import { setTimeout as delay } from 'node:timers/promises';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointKey, familyOf, type Endpoint } from '../codec/address.js';
import { decodeMessage, DEFAULT_PORT, encodeMessage, type NatMapping } from '../codec/messages.js';
import { verifyIntegrity } from '../codec/stun.js';
import { parseWgDump, type WgDump } from '../codec/wg-dump.js';
import { decodeWgSync, encodeWgSync, MAX_WG_HOSTS, MAX_WG_QUERY, wgProof, type WgPeerInfo, type WgSyncSuccess } from '../codec/wg-messages.js';
import { handshakeFresh, PROBLEM_ORDER, WgDiscovery, type WgPeerProblem, type WgPeerStatus, type WgSetEndpoint } from '../core/wg-discovery.js';
import { deriveNetworkKeys, type NetworkKeys } from '../crypto/keys.js';
import { decodeKey, dh, encodeKey } from '../crypto/wireguard.js';
import { BurrowError } from '../errors.js';
import { hostCandidates } from './candidates.js';
import { bindUdp, closeUdp, endpointOf, resolveServers, sendUdp, type BoundSocket } from './udp.js';
import { ServerList, type ServerMove } from '../core/server-list.js';
import { classifyMapping, wireMapping } from '../core/nat/classify.js';
import { defaultWgRelayTiming, WgRelayPlanner, type WgPathReason, type WgRelayAction, type WgRelayMode, type WgRelayTiming } from '../core/wg-relay.js';
import type { RelayInfo } from './punch.js';
import { WgRelaySessions } from './wg-relay.js';

/** WireGuard's recommended keepalive for peers behind NATs, as `wg set … persistent-keepalive 25`. */
export const KEEPALIVE_SECONDS = 25;

export interface WireGuardOptions {
  readonly interface: string;
  /** The rendezvous server, HOST:PORT. */
  readonly server: string;
  readonly secret: string | Uint8Array;
  /** Keep watching and re-resolving until `signal` aborts. Default false: finish once every peer has handshaken. */
  readonly continuous?: boolean;
  /** Continuous mode: time between rounds (one WG-SYNC exchange per 6 peers, one `wg show`). Default 10 s, minimum 1 s. */
  readonly intervalMs?: number;
  /** One-shot mode: give up after this long. Continuous mode: report a peer's problem after this long. Default 30 s. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** The `wg` binary. Default: $BURROW_WG or `wg`. */
  readonly wgCommand?: string;
  /**
   * WireGuard over the relay (continuous mode only): `auto` (the default) relays a peer that has no direct path and
   * moves it back to a direct endpoint when one appears; `never`; `only` relays every peer (no peer learns this
   * host's address). One-shot mode never relays: a peer that would need it fails with NO_PATH, which says so.
   */
  readonly relay?: WgRelayMode;
  /** When to relay and try direct again; defaults follow the interval (src/core/wg-relay.ts). */
  readonly relayTiming?: Partial<WgRelayTiming>;
  readonly onEvent?: (event: WgEvent) => void;
}

export type WgEvent =
  | { readonly type: 'interface'; readonly publicKey: string; readonly listenPort: number; readonly peers: number }
  | { readonly type: 'server-peer'; readonly serverKey: string; readonly endpoint: Endpoint }
  | { readonly type: 'left-alone'; readonly key: string; readonly endpoint: Endpoint }
  | { readonly type: 'self'; readonly endpoint: Endpoint | undefined; readonly mapping: NatMapping }
  | { readonly type: 'endpoint-set'; readonly key: string; readonly endpoint: Endpoint; readonly reason: WgSetEndpoint['reason']; readonly lan: boolean }
  | { readonly type: 'status'; readonly key: string; readonly status: WgPeerStatus }
  | { readonly type: 'interface-missing'; readonly detail: string }
  /** The server stopped answering WG-SYNC: WireGuard and WG-SYNC move to the next of `--server S1,S2` (src/core/server-list.ts). */
  | { readonly type: 'failover'; readonly from: Endpoint; readonly to: Endpoint }
  /** A relay session for a peer: asked for, agreed on a relayed path (its proxy), or failed/ended (retried). */
  | { readonly type: 'relay-session'; readonly key: string; readonly state: 'starting' }
  | { readonly type: 'relay-session'; readonly key: string; readonly state: 'ready'; readonly proxy: Endpoint; readonly relay: RelayInfo | undefined; readonly upstream: string | undefined }
  | { readonly type: 'relay-session'; readonly key: string; readonly state: 'ended'; readonly detail: string }
  /** A peer's path changed: `relay` (its endpoint is the proxy) or `direct` (its own address). */
  | { readonly type: 'path'; readonly key: string; readonly path: 'relay' | 'direct'; readonly endpoint: Endpoint; readonly reason: WgPathReason }
  | { readonly type: 'retry'; readonly detail: string };

export interface WgPeerReport {
  readonly key: string;
  readonly status: WgPeerStatus;
  readonly endpoint: Endpoint | undefined;
  /** `relay` while the endpoint is burrow's proxy. */
  readonly path: 'direct' | 'relay';
  /** The relay a relayed peer's traffic goes through. */
  readonly relay?: RelayInfo;
}

export interface WgDiscoveryResult {
  readonly interface: string;
  readonly publicKey: string;
  readonly selfEndpoint: Endpoint | undefined;
  readonly mapping: NatMapping;
  readonly peers: readonly WgPeerReport[];
  readonly elapsedMs: number;
}

// ---------------------------------------------------------------------------------------------------------------------
// The `wg` tool.

class WgTool {
  constructor(
    readonly command: string,
    private readonly signal: AbortSignal | undefined,
  ) {}

  run(args: readonly string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      execFile(this.command, args, { timeout: 10_000, maxBuffer: 4 << 20, ...(this.signal ? { signal: this.signal } : {}) }, (err, stdout, stderr) => {
        if (!err) {
          resolve(stdout);
          return;
        }
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') reject(BurrowError.wgMissing(this.command));
        else if (code === 'ABORT_ERR') reject(BurrowError.aborted());
        else reject(Object.assign(new Error(stderr.trim() || err.message), { wgStderr: stderr.trim() }));
      });
    });
  }

  async dump(iface: string): Promise<WgDump> {
    let text: string;
    try {
      text = await this.run(['show', iface, 'dump']);
    } catch (err) {
      if (err instanceof BurrowError) throw err;
      throw BurrowError.wgNoInterface(iface, err instanceof Error ? err.message : String(err));
    }
    const parsed = parseWgDump(text);
    if (!parsed.ok) throw BurrowError.wgNoInterface(iface, `\`wg show ${iface} dump\` printed something unexpected (${parsed.reason})`);
    return parsed.dump;
  }

  /**
   * `wg set IFACE ARGS…`. Each of `secrets` is written to a private temporary file whose path replaces the argument
   * `{secretN}` (wg reads keys from files only, and Node's stdin pipes are sockets that `wg` cannot open).
   */
  async set(iface: string, args: readonly string[], secrets: readonly string[] = []): Promise<void> {
    let dir: string | undefined;
    try {
      let argv = args;
      if (secrets.length > 0) {
        const d = (dir = await mkdtemp(join(tmpdir(), 'burrow-wg-')));
        await Promise.all(secrets.map((text, i) => writeFile(join(d, `key${i}`), `${text}\n`, { mode: 0o600 })));
        argv = args.map((a) => a.replace(/^\{secret(\d+)\}$/, (_, n: string) => join(d, `key${n}`)));
      }
      await this.run(['set', iface, ...argv]);
    } catch (err) {
      if (err instanceof BurrowError) throw err;
      throw new BurrowError('COMMAND_FAILED', `\`wg set ${iface} ${args.join(' ')}\` failed: ${err instanceof Error ? err.message : String(err)}; check that the interface exists and that burrow runs as root or with CAP_NET_ADMIN.`, { cause: err });
    } finally {
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    }
  }
}

// ---------------------------------------------------------------------------------------------------------------------
// WG-SYNC and STUN over one UDP socket.

/** How long the server may go without seeing this interface before WireGuard is made to handshake with it again. */
const SERVER_REHANDSHAKE_MS = 3000;

/** The server's record of this interface is stale after this long without an authenticated WireGuard packet. */
const SELF_STALE_SECONDS = 60;

/** How often the interface itself is looked at (`wg show`, local only). */
const LOCAL_POLL_MS = 1000;

/** Waits after each WG-SYNC or Binding request before sending it again (4.5 s in all). */
const RETRY_DELAYS_MS = [300, 600, 1200, 2400];

/** The server in use stopped answering WG-SYNC and the list moved to the next (thrown by `SyncClient.sync`). */
class ServerMoved extends Error {
  constructor(readonly move: ServerMove) {
    super(`the server at ${endpointKey(move.from)} stopped answering; moving to ${endpointKey(move.to)}`);
  }
}

class SyncClient {
  private clockOffset = 0;
  private readonly waiting = new Map<string, (data: Uint8Array, from: Endpoint) => void>();

  constructor(
    private readonly bound: BoundSocket,
    private readonly servers: ServerList,
    private readonly keys: NetworkKeys,
    private readonly signal: AbortSignal | undefined,
  ) {
    bound.socket.on('message', (data, rinfo) => {
      if (data.length < 20) return;
      const txid = data.subarray(8, 20).toString('hex');
      this.waiting.get(txid)?.(data, endpointOf(rinfo));
    });
  }

  /**
   * Sends `build(txid)` until an answer from `to` arrives; undefined after every retry went unanswered. With `servers`
   * (WG-SYNC to the current server), the list hears of each request and answer, and the exchange ends early when the
   * list moves on (ServerMoved).
   */
  private async exchange(to: Endpoint, build: (txid: Uint8Array, now: number) => Uint8Array, servers?: ServerList): Promise<Uint8Array | undefined> {
    const txid = randomBytes(12);
    const id = txid.toString('hex');
    try {
      for (const wait of RETRY_DELAYS_MS) {
        if (this.signal?.aborted) throw BurrowError.aborted();
        servers?.sent(Date.now());
        sendUdp(this.bound, to, build(txid, Date.now() + this.clockOffset), () => undefined);
        const due = servers?.dueAt();
        const answer = await this.sleepOrAnswer(id, to, due === undefined ? wait : Math.max(0, Math.min(wait, due - Date.now())));
        if (answer) {
          servers?.answered();
          return answer;
        }
        const move = servers?.advance(Date.now());
        if (move) throw new ServerMoved(move);
      }
      return undefined;
    } finally {
      this.waiting.delete(id);
    }
  }

  private sleepOrAnswer(id: string, from: Endpoint, ms: number): Promise<Uint8Array | undefined> {
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        clearTimeout(timer);
        reject(BurrowError.aborted());
      };
      const timer = setTimeout(() => {
        this.signal?.removeEventListener('abort', onAbort);
        resolve(undefined);
      }, ms);
      this.signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.set(id, (data, source) => {
        if (source.address !== from.address || source.port !== from.port) return;
        clearTimeout(timer);
        this.signal?.removeEventListener('abort', onAbort);
        resolve(data);
      });
    });
  }

  /** The mapped address the server (or its alternate port) sees for this socket. */
  async binding(to: Endpoint): Promise<Endpoint | undefined> {
    // Padded so the answer is never longer than the request (the server answers such requests without limit).
    const answer = await this.exchange(to, (txid) => encodeMessage({ kind: 'binding', txid, fingerprint: false, software: 'burrow wg'.padEnd(20, ' ') }, { padTo: 64 }));
    if (!answer) return undefined;
    const d = decodeMessage(answer);
    return d.ok && d.msg.kind === 'binding-ok' ? d.msg.mapped : undefined;
  }

  /** The server's WG-PROOF-KEY, learnt from its answers (it changes when the server restarts). */
  private proofKey: Uint8Array | undefined;

  async sync(dump: WgDump, hosts: readonly Endpoint[], mapping: NatMapping, query: readonly Uint8Array[]): Promise<WgSyncSuccess> {
    const server = this.servers.current;
    const serverText = endpointKey(server);
    const key = decodeKey(dump.publicKey) ?? new Uint8Array(32);
    for (let attempt = 0; attempt < 3; attempt++) {
      const proofKey = this.proofKey;
      const shared = proofKey ? dh(dump.privateKey, proofKey) : undefined;
      const answer = await this.exchange(server, (txid, now) => {
        const facts = { txid, networkId: this.keys.networkId, timestamp: now, key, listenPort: dump.listenPort, hosts, mapping };
        return encodeWgSync({ kind: 'wg-sync', ...facts, query, proof: shared ? wgProof(shared, facts) : undefined }, this.keys.clientToServer);
      }, this.servers);
      if (!answer) throw BurrowError.serverUnreachable(serverText, RETRY_DELAYS_MS.length, 5);
      const ok = decodeWgSync(answer);
      if (ok.ok && ok.msg.kind === 'wg-sync-ok') {
        // Unauthenticated look-alikes are ignored like silence would be: they cannot make us give up.
        if (verifyIntegrity(answer, ok.stun, this.keys.serverToClient) !== 'valid') continue;
        this.proofKey = ok.msg.proofKey;
        // Our proof used no key or an old one (first request, or the server restarted): announce again at once.
        if (!proofKey || !Buffer.from(proofKey).equals(ok.msg.proofKey)) continue;
        return ok.msg;
      }
      const err = decodeMessage(answer);
      if (!err.ok || err.msg.kind !== 'error') throw BurrowError.socket(`unexpected answer from ${serverText}`, err.ok ? err.msg.kind : err.reason);
      if (err.msg.code === 401) throw BurrowError.authFailed(serverText);
      if (err.msg.code === 438 && err.msg.timestamp !== undefined && verifyIntegrity(answer, err.stun, this.keys.serverToClient) === 'valid') {
        this.clockOffset = err.msg.timestamp - Date.now();
        continue;
      }
      if (err.msg.code === 503 && verifyIntegrity(answer, err.stun, this.keys.serverToClient) === 'valid') throw BurrowError.storeUnavailable(serverText);
      throw BurrowError.socket(`the server at ${serverText} refused WG-SYNC`, `${err.msg.code} ${err.msg.reason}`);
    }
    throw BurrowError.socket(`the server at ${serverText} kept refusing WG-SYNC`, 'no valid answer to three requests (stale clock, or answers that do not authenticate)');
  }
}

// ---------------------------------------------------------------------------------------------------------------------

async function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  try {
    await delay(ms, undefined, signal ? { signal } : {});
  } catch {
    throw BurrowError.aborted();
  }
}

/** Errors that --continuous rides out (after its first successful exchange for a refused secret). */
function isRetryable(err: unknown, synced: boolean): boolean {
  if (!(err instanceof BurrowError)) return false;
  if (err.code === 'AUTH_FAILED') return synced;
  return err.code === 'SERVER_UNREACHABLE' || err.code === 'SOCKET' || err.code === 'COMMAND_FAILED' || err.code === 'WG_NO_INTERFACE';
}

function problemError(problem: WgPeerProblem, peers: string, server: string, seconds: number, relay: WgRelayMode): BurrowError {
  switch (problem) {
    case 'not-registered':
      return BurrowError.wgPeerNotRegistered(peers, server, seconds);
    case 'peer-not-reaching-server':
      return BurrowError.wgPeerNotReachingServer(peers, server, seconds);
    case 'symmetric-peer':
      return BurrowError.wgSymmetric(peers, 'peer', seconds, relay !== 'never');
    case 'symmetric-self':
      return BurrowError.wgSymmetric(peers, 'self', seconds, relay !== 'never');
    case 'no-handshake':
      return BurrowError.wgNoHandshake(peers, seconds);
  }
}

export async function discoverWireGuard(options: WireGuardOptions): Promise<WgDiscoveryResult> {
  const started = Date.now();
  const signal = options.signal;
  signal?.throwIfAborted();
  const emit = (e: WgEvent): void => options.onEvent?.(e);
  const continuous = options.continuous === true;
  const intervalMs = Math.max(1000, options.intervalMs ?? 10_000);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const iface = options.interface;
  const relayMode: WgRelayMode = options.relay ?? 'auto';
  if (relayMode === 'only' && !continuous) {
    throw BurrowError.invalidOption('relay', 'relayed paths only need continuous mode: burrow must stay on as the proxy that forwards WireGuard through the relay', 'only');
  }
  if (!/^[A-Za-z0-9_.=+-]{1,15}$/.test(iface)) throw BurrowError.invalidOption('interface', 'not a valid interface name (1–15 letters, digits, _ . = + -)', iface);
  // Several servers (HOST:PORT,HOST:PORT): the first, then the next when it stops answering WG-SYNC (WireGuard's
  // server peer follows: one key for every server of the deployment, its endpoint moved).
  const servers = new ServerList(await resolveServers(options.server, DEFAULT_PORT, 'server'));
  let server = servers.current;
  let serverText = endpointKey(server);
  const keys = deriveNetworkKeys(typeof options.secret === 'string' ? Buffer.from(options.secret, 'utf8') : options.secret);
  const serverKey = encodeKey(keys.wireguard.publicKey);
  const tool = new WgTool(options.wgCommand ?? process.env.BURROW_WG ?? 'wg', signal);
  const discovery = new WgDiscovery({ serverKey, serverAddress: server.address, serverAddresses: servers.all.map((e) => e.address) });

  let dump = await tool.dump(iface);
  emit({ type: 'interface', publicKey: dump.publicKey, listenPort: dump.listenPort, peers: dump.peers.length });
  const first = discovery.targets(dump);
  for (const p of first.serverHost) if (p.endpoint) emit({ type: 'left-alone', key: p.publicKey, endpoint: p.endpoint });
  if (first.peers.length === 0) {
    throw BurrowError.wgOnlyServerPeer(iface, serverText, first.serverHost[0]?.publicKey);
  }

  const bound = await bindUdp(familyOf(server.address) === 6 ? '::' : '0.0.0.0', 0).catch((err: unknown) => {
    throw BurrowError.socket('cannot open a UDP socket', err);
  });
  const client = new SyncClient(bound, servers, keys, signal);
  let mapping: NatMapping = 'unknown';
  let mappingChecked = false;
  // WireGuard over the relay: continuous mode only (burrow must stay on as the proxy).
  const planner = continuous && relayMode !== 'never' ? new WgRelayPlanner(relayMode, { ...defaultWgRelayTiming(intervalMs), ...options.relayTiming }) : undefined;
  const sessions = planner ? new WgRelaySessions({ server: () => { const at = servers.all.findIndex((s) => s === servers.current); return [...servers.all.slice(at), ...servers.all.slice(0, at)].map(endpointKey).join(','); }, secret: options.secret, ownKey: dump.publicKey, timeoutMs, ...(signal ? { signal } : {}) }) : undefined;
  const relayInfos = new Map<string, RelayInfo>();
  let ours: readonly Endpoint[] = [];
  const statuses = new Map<string, WgPeerStatus>();
  const report = (): WgDiscoveryResult => ({
    interface: iface,
    publicKey: dump.publicKey,
    selfEndpoint: discovery.selfInfo?.endpoint,
    mapping,
    peers: discovery.targets(dump).peers.map((p) => {
      const relayed = planner !== undefined && planner.stateOf(p.publicKey) !== 'direct' && planner.stateOf(p.publicKey) !== 'relaying';
      const relay = relayInfos.get(p.publicKey);
      return { key: p.publicKey, status: statuses.get(p.publicKey) ?? 'waiting', endpoint: p.endpoint, path: relayed ? ('relay' as const) : ('direct' as const), ...(relayed && relay ? { relay } : {}) };
    }),
    elapsedMs: Date.now() - started,
  });

  /** Adds (or repairs) the server peer: after a restart of WireGuard, the interface has forgotten it. */
  /**
   * Removes and re-adds the server peer in one `wg set`: WireGuard drops its session with the server and handshakes
   * again at once. Needed when the server has forgotten this interface (it restarted, or evicted the record) while
   * WireGuard keeps sending keepalives on a session the server no longer knows (it would re-key only after 2 min).
   */
  /** Sets the server peer (after `first`): preshared key, endpoint, no allowed IPs, keepalive 25. */
  const setServerPeer = async (first: readonly string[] = []): Promise<void> => {
    await tool.set(iface, [...first, 'peer', serverKey, 'preshared-key', '{secret0}', 'endpoint', endpointKey(server), 'allowed-ips', '', 'persistent-keepalive', String(KEEPALIVE_SECONDS)], [keys.wireguard.presharedKey.toString('base64')]);
    emit({ type: 'server-peer', serverKey, endpoint: server });
  };

  const recreateServerPeer = async (): Promise<void> => {
    await setServerPeer(['peer', serverKey, 'remove']);
  };

  const ensureServerPeer = async (): Promise<void> => {
    // A server peer of an earlier secret (same server address and port, no allowed IPs, another key) is ours and
    // stale after a rotation: remove it, or WireGuard keeps handshaking with a key the server no longer has.
    const stale = dump.peers.filter((p) => p.publicKey !== serverKey && p.allowedIps.length === 0 && p.endpoint !== undefined && servers.all.some((e) => endpointKey(e) === endpointKey(p.endpoint as Endpoint)));
    if (stale.length > 0) await tool.set(iface, stale.flatMap((p) => ['peer', p.publicKey, 'remove']));
    const existing = dump.peers.find((p) => p.publicKey === serverKey);
    if (existing?.endpoint && endpointKey(existing.endpoint) === serverText && existing.persistentKeepalive === KEEPALIVE_SECONDS) return;
    await setServerPeer();
  };

  /** Makes WireGuard send one keepalive to each of `keys` now (persistent-keepalive 0 → 25 sends one at once). */
  const nudge = async (peerKeys: readonly string[]): Promise<void> => {
    if (peerKeys.length === 0) return;
    await tool.set(iface, peerKeys.flatMap((k) => ['peer', k, 'persistent-keepalive', '0', 'peer', k, 'persistent-keepalive', String(KEEPALIVE_SECONDS)]));
  };

  /**
   * Sets endpoints in one `wg set`. A peer that moved is removed and re-added with the same allowed IPs and preshared
   * key in the same command, which drops its dead session so WireGuard initiates a new handshake at once.
   */
  const applyEndpoints = async (sets: readonly WgSetEndpoint[]): Promise<void> => {
    const args: string[] = [];
    const secrets: string[] = [];
    for (const s of sets) {
      const peer = dump.peers.find((p) => p.publicKey === s.key);
      if (s.rehandshake && peer) {
        args.push('peer', s.key, 'remove', 'peer', s.key);
        if (peer.presharedKey !== undefined) {
          args.push('preshared-key', `{secret${secrets.length}}`);
          secrets.push(peer.presharedKey);
        }
        args.push('allowed-ips', peer.allowedIps.join(','));
      } else {
        args.push('peer', s.key);
      }
      args.push('endpoint', endpointKey(s.endpoint), 'persistent-keepalive', String(KEEPALIVE_SECONDS));
    }
    await tool.set(iface, args, secrets);
    // Send something now (a keepalive, or a handshake initiation if there is no session): it opens our NAT towards
    // the new endpoint instead of waiting for a timer.
    await nudge(sets.map((s) => s.key));
  };

  /**
   * WireGuard over the relay: asks the planner (src/core/wg-relay.ts) what to do now and does it. Sessions report
   * back between steps (ready: the proxy address; ended: started again after a pause).
   */
  const relayStep = async (): Promise<void> => {
    if (!planner || !sessions) return;
    const actions: WgRelayAction[] = planner.step({
      peers: discovery.targets(dump).peers,
      infoOf: (k) => discovery.infoOf(k),
      self: discovery.selfInfo,
      mapping,
      ours,
      now: Date.now(),
    });
    const sets: WgSetEndpoint[] = [];
    for (const a of actions) {
      switch (a.type) {
        case 'start-session': {
          const key = a.key;
          emit({ type: 'relay-session', key, state: 'starting' });
          sessions.start(key, dump.listenPort, {
            ready: (proxy, relay, upstream) => {
              if (relay) relayInfos.set(key, relay);
              planner.sessionReady(key, proxy);
              emit({ type: 'relay-session', key, state: 'ready', proxy, relay, upstream });
            },
            ended: (detail) => {
              relayInfos.delete(key);
              planner.sessionEnded(key, Date.now());
              emit({ type: 'relay-session', key, state: 'ended', detail });
            },
          });
          break;
        }
        case 'stop-session':
          relayInfos.delete(a.key);
          await sessions.stop(a.key);
          break;
        case 'set-endpoint':
          sets.push({ key: a.key, endpoint: a.endpoint, reason: 'moved', lan: false, rehandshake: a.rehandshake });
          break;
        case 'path':
          emit({ type: 'path', key: a.key, path: a.path, endpoint: a.endpoint, reason: a.reason });
          break;
      }
    }
    if (sets.length > 0) await applyEndpoints(sets);
  };

  /** Peers whose endpoint discovery leaves alone: relayed ones; with relayed paths only, every peer. */
  const held = (): ReadonlySet<string> => (relayMode === 'only' && planner ? new Set(discovery.targets(dump).peers.map((p) => p.publicKey)) : (planner?.held() ?? new Set<string>()));

  let lastListenPort = dump.listenPort;
  let selfMissingSince: number | undefined;
  let synced = false;
  let lastServerRecreate = -Infinity;
  try {
    await ensureServerPeer();
    for (let round = 0; ; round++) {
      try {
        const now = Date.now();
        // 1. Ask the server. The mapping test needs the alternate port the first answer names.
        const targets = discovery.targets(dump).peers;
        const hosts = hostCandidates({ address: '0.0.0.0', port: dump.listenPort }, familyOf(server.address), undefined, { excludeInterface: iface, limit: MAX_WG_HOSTS });
        ours = hosts;
        const infos = new Map<string, WgPeerInfo>();
        let self: WgPeerInfo | undefined;
        let alternate: Endpoint | undefined;
        for (let i = 0; i < Math.max(1, targets.length); i += MAX_WG_QUERY) {
          const batch = targets.slice(i, i + MAX_WG_QUERY);
          const answer = await client.sync(dump, hosts, mapping, batch.map((p) => decodeKey(p.publicKey) ?? new Uint8Array(32)));
          self = answer.self;
          alternate = answer.alternate;
          for (const info of answer.peers) infos.set(encodeKey(info.key), info);
        }
        synced = true;
        if (!mappingChecked && alternate) {
          mappingChecked = true;
          const [a, b] = await Promise.all([client.binding(server), client.binding(alternate)]);
          // The one NAT classification module (src/core/nat/classify.ts), as the punch and netcheck use it.
          mapping = a && b ? wireMapping(classifyMapping({ primary: a, otherPort: b })) : 'unknown';
        }
        if (self) {
          const before = discovery.selfInfo;
          if (!before || before.endpoint?.address !== self.endpoint?.address || before.endpoint?.port !== self.endpoint?.port || round === 0) {
            emit({ type: 'self', endpoint: self.endpoint, mapping });
          }
          // The server does not see this interface (any more): make WireGuard handshake with it afresh.
          // At once when it knew us a round ago (it restarted or evicted us); else after a grace for the first handshake.
          // A record whose endpoint has not been confirmed for a minute means the server lost our session (keepalives
          // come every 25 s and at every interval).
          const seen = self.endpoint !== undefined && self.ageSeconds <= SELF_STALE_SECONDS;
          if (seen) selfMissingSince = undefined;
          else if (before?.endpoint !== undefined && now - lastServerRecreate >= SERVER_REHANDSHAKE_MS) {
            lastServerRecreate = now;
            await recreateServerPeer();
          } else if (selfMissingSince === undefined) selfMissingSince = now;
          else if (now - selfMissingSince >= SERVER_REHANDSHAKE_MS && now - lastServerRecreate >= SERVER_REHANDSHAKE_MS) {
            lastServerRecreate = now;
            await recreateServerPeer();
          }
          // 2. Set what changed.
          const sets = discovery.update(dump, self, infos, now, hosts, held());
          if (sets.length > 0) {
            await applyEndpoints(sets);
            for (const s of sets) emit({ type: 'endpoint-set', key: s.key, endpoint: s.endpoint, reason: s.reason, lan: s.lan });
          }
        }
        // 3. Look at the interface: once a second (a local `wg show`, no traffic), so that a restarted WireGuard is
        // repaired at once; the server is asked again after the interval, or at once when the interface changed.
        const pause = continuous ? intervalMs : 1000;
        const roundEnd = Date.now() + (round === 0 && !continuous ? 500 : pause);
        let changed = false;
        let missing = false;
        while (!changed && Date.now() < roundEnd) {
          await sleep(Math.min(LOCAL_POLL_MS, Math.max(0, roundEnd - Date.now())), signal);
          try {
            dump = await tool.dump(iface);
            missing = false;
          } catch (err) {
            if (!continuous || !(err instanceof BurrowError) || err.code !== 'WG_NO_INTERFACE') throw err;
            if (!missing) emit({ type: 'interface-missing', detail: err.message });
            missing = true;
            continue;
          }
          if (dump.listenPort !== lastListenPort || !dump.peers.some((p) => p.publicKey === serverKey)) {
            if (dump.listenPort !== lastListenPort && sessions) {
              // The proxies send to the old port: new sessions, for the new one.
              for (const p of discovery.targets(dump).peers) {
                if (!sessions.has(p.publicKey)) continue;
                await sessions.stop(p.publicKey);
                planner?.sessionEnded(p.publicKey, Date.now());
              }
            }
            lastListenPort = dump.listenPort;
            mappingChecked = false;
            changed = true;
          }
          await relayStep();
        }
        if (missing) continue;
        await ensureServerPeer();
        const elapsed = Date.now() - started;
        const final = elapsed >= timeoutMs;
        const current = discovery.status(dump, Date.now(), continuous ? false : final);
        for (const [key, status] of current) {
          if (statuses.get(key) !== status) emit({ type: 'status', key, status });
          statuses.set(key, status);
        }
        const all = [...current.values()];
        if (!continuous && all.length > 0 && all.every((s) => s === 'connected')) return report();
        if (continuous) {
          // Re-open every NAT on the paths (ours towards each peer and towards the server) once per interval, so that
          // flushed NAT state or a moved mapping is repaired within an interval rather than a keepalive period.
          await nudge([serverKey, ...discovery.targets(dump).peers.map((p) => p.publicKey)]);
          // A peer that has stayed unconnected for a timeout: say why, once per change.
          const reasons = elapsed >= timeoutMs ? discovery.status(dump, Date.now(), true) : new Map<string, WgPeerStatus>();
          for (const peer of discovery.targets(dump).peers) {
            if (handshakeFresh(peer, Date.now())) continue;
            const why = reasons.get(peer.publicKey);
            if (why && why !== 'connected' && elapsed >= timeoutMs && statuses.get(peer.publicKey) !== why) {
              statuses.set(peer.publicKey, why);
              emit({ type: 'status', key: peer.publicKey, status: why });
            }
          }
          continue;
        }
        if (final) {
          if (!discovery.selfInfo?.endpoint) throw BurrowError.wgNotReachingServer(serverText, Math.round(timeoutMs / 1000));
          const failing = [...current.entries()].filter(([, s]) => s !== 'connected') as [string, WgPeerProblem][];
          const worst = PROBLEM_ORDER.find((p) => failing.some(([, s]) => s === p)) ?? 'no-handshake';
          const names = failing.filter(([, s]) => s === worst).map(([k]) => k).join(', ');
          const error = problemError(worst, names, serverText, Math.round(timeoutMs / 1000), relayMode);
          throw Object.assign(error, { report: report() });
        }
      } catch (err) {
        if (err instanceof ServerMoved) {
          // The server stopped answering: WireGuard handshakes with the next one (a new session: the old server's is
          // unknown there) and WG-SYNC asks it, at once. One-shot: still within the timeout.
          server = err.move.to;
          serverText = endpointKey(server);
          emit({ type: 'failover', from: err.move.from, to: err.move.to });
          if (!continuous && Date.now() - started >= timeoutMs) throw BurrowError.serverUnreachable(servers.all.map(endpointKey).join(', '), servers.all.length, Math.round(timeoutMs / 1000));
          mappingChecked = false;
          lastServerRecreate = Date.now();
          await recreateServerPeer();
          continue;
        }
        // --continuous outlives what passes: the server down or restarting, the interface gone for a while, a
        // forged 401 once it has worked. It says so and tries again next interval.
        if (!continuous || !isRetryable(err, synced)) throw err;
        emit({ type: 'retry', detail: err instanceof Error ? err.message : String(err) });
        await sleep(intervalMs, signal);
      }
    }
  } catch (err) {
    if (continuous && err instanceof BurrowError && err.code === 'ABORTED') return report();
    throw err;
  } finally {
    await sessions?.stopAll();
    await closeUdp(bound.socket);
  }
}
