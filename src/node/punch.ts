/**
 * `punch()`: the Node driver around the punch agent (src/core/punch). It binds one UDP socket, runs the agent under
 * the generic driver loop (driver.ts), and always releases the socket before it settles, so the caller can hand the
 * same local port to another program at once.
 */
import { randomBytes } from 'node:crypto';
import { endpointKey, type Endpoint } from '../codec/address.js';
import { checkName, DEFAULT_PORT, type PeerMode, type RelayOffer } from '../codec/messages.js';
import { builtinCredentials } from '../codec/turn.js';
import {
  candidatePriority,
  PunchAgent,
  punchFailureError,
  punchFailureOf,
  udpTransport,
  type BirthdayResult,
  type PunchConfig,
  type PunchEvent,
  type PunchResult,
  type PunchTiming,
  type RelayReport,
} from '../core/punch/index.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import { birthdayActions, PROCESS_BIRTHDAY_GATE } from './birthday.js';
import { hostCandidates } from './candidates.js';
import { runMachine } from './driver.js';
import { RelayAllocationError, RelayTransport } from './relay-transport.js';
import { UdpTransport, type DatagramTransport } from './transport.js';
import { UdpProxy } from './udp-proxy.js';
import { parseLocal, resolveEndpoint, resolveServers } from './udp.js';

export interface PunchOptions {
  /**
   * The rendezvous server, `HOST:PORT` (port defaults to 3478); or several servers sharing one store,
   * `HOST:PORT,HOST:PORT…` (a name may also resolve to several addresses): registered with in order, moving to the
   * next when one stops answering.
   */
  readonly server: string;
  /** The network secret (text as read from the secret file, or raw bytes). */
  readonly secret: string | Uint8Array;
  /** Our name and the partner's. */
  readonly name: string;
  readonly peer: string;
  /** Local `[ADDR:]PORT` to bind; default: any address, a free port. */
  readonly local?: string;
  /** Give up after this long (default 30 s). */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  /** Progress: registration, NAT finding, introduction, validated paths, connection. */
  readonly onEvent?: (event: PunchEvent) => void;
  readonly timing?: Partial<PunchTiming>;
  /** What this side runs, told to the partner (default `punch`); an incompatible partner ends both sides with MODE_MISMATCH. */
  readonly purpose?: PeerMode;
  /**
   * Birthday-paradox probing when exactly one side's NAT is symmetric (on by default; false turns it off): the
   * symmetric side opens `sockets` sockets (default 512) whose opening packets carry IP TTL `ttl` (default 2). A path
   * found this way leaves, on the symmetric side, from one of those sockets: `localPort` is then that socket's
   * (random) port, on the address `local` names. See docs/protocol.md.
   */
  readonly birthday?: false | { readonly sockets?: number; readonly ttl?: number };
}

/** The agent's birthday configuration for these options (the process-wide gate). */
function birthdayConfig(options: PunchOptions): NonNullable<PunchConfig['birthday']> {
  if (options.birthday === false) return false;
  return { gate: PROCESS_BIRTHDAY_GATE, ...(options.birthday?.sockets !== undefined ? { sockets: options.birthday.sockets } : {}), ...(options.birthday?.ttl !== undefined ? { ttl: options.birthday.ttl } : {}) };
}

export type { PunchEvent, PunchResult };

/** The checks `punch()` and `connectStream()` share: valid, distinct names and a positive timeout. */
export function validateNames(name: string, peer: string, timeoutMs = 30_000): void {
  for (const [option, value] of [['name', name], ['peer', peer]] as const) {
    const problem = checkName(value);
    if (problem !== undefined) throw BurrowError.invalidOption(option, `the name ${problem}`, value);
  }
  if (name === peer) throw BurrowError.invalidOption('peer', 'the same as name: each side names itself and the other', peer);
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw BurrowError.invalidOption('timeoutMs', 'not a positive number', String(timeoutMs));
}

/** The network secret as bytes; an empty one is a usage error. */
export function secretBytes(secret: string | Uint8Array): Uint8Array {
  const bytes = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : secret;
  if (bytes.length === 0) throw BurrowError.invalidOption('secret', 'the network secret is empty');
  return bytes;
}

/** Punches a direct UDP path to `peer` through the rendezvous server. Resolves once both sides confirmed it. */
export async function punch(options: PunchOptions): Promise<PunchResult> {
  validateNames(options.name, options.peer, options.timeoutMs);
  options.signal?.throwIfAborted();
  const [first, ...fallbacks] = await resolveServers(options.server, DEFAULT_PORT, 'server');
  if (!first) throw BurrowError.invalidOption('server', 'no server given', options.server);
  // The built-in relay is the first server's (a failover to another server keeps the allocation already made).
  const server: Endpoint = first;
  const local = parseLocal(options.local, server.address.includes(':') ? 6 : 4);
  const secret = secretBytes(options.secret);
  let udp: UdpTransport;
  try {
    udp = await UdpTransport.bind(local.address, local.port);
  } catch (err) {
    throw BurrowError.bindFailed({ transport: 'udp', address: local.address, port: local.port, role: 'local' }, err);
  }
  const agent = new PunchAgent({
    name: options.name,
    peer: options.peer,
    keys: deriveNetworkKeys(secret),
    server,
    ...(fallbacks.length > 0 ? { fallbacks } : {}),
    transports: [udpTransport(udp.local, hostCandidates(udp.local, udp.bound.family, server), 'udp')],
    timeoutMs: options.timeoutMs ?? 30_000,
    sessionNonce: randomBytes(16),
    randomBytes: (n) => randomBytes(n),
    ...(options.timing ? { timing: options.timing } : {}),
    ...(options.purpose !== undefined ? { purpose: options.purpose } : {}),
    birthday: birthdayConfig(options),
  });
  return runMachine(agent, { transports: { udp }, signal: options.signal, onEvent: options.onEvent, onAction: birthdayActions(udp.local.address) }).result;
}

// ---------------------------------------------------------------------------------------------------------------------
// Punch with a relay in parallel, and the proxy for a relayed path.

/** Whether to use a relay: 'auto' (when no direct path validates in time), 'never', or 'only' (relayed paths only). */
export type RelayMode = 'auto' | 'never' | 'only';

/** A TURN server given by hand (instead of the one the rendezvous server offers). */
export interface TurnServerOption {
  /** `turn:HOST[:PORT]` (UDP; `?transport=udp` allowed). */
  readonly url: string;
  readonly username: string;
  readonly password: string;
}

export interface PathOptions extends PunchOptions {
  /** Default 'auto'. */
  readonly relay?: RelayMode;
  /** Use this TURN server, allocated from the start, instead of the server's offer. */
  readonly turn?: TurnServerOption;
  /**
   * For a relayed path: the program's address the proxy exchanges datagrams with (default: a free loopback port,
   * `result.localPort`, for the program to bind). `burrow wg` gives WireGuard's listen port on 127.0.0.1.
   */
  readonly proxyProgram?: Endpoint;
  /**
   * Proxy every path, direct ones too (agent session mode), instead of handing a direct path off: the program then
   * always talks to the proxy, and the path under it moves (relay → direct) without the program noticing. `burrow wg`
   * uses this: WireGuard's port cannot be handed a socket, and a direct path between the two burrows that validates
   * while WireGuard is relayed is the sign that a direct WireGuard endpoint is worth trying.
   */
  readonly session?: boolean;
  /**
   * Advertise no host address of this network interface (`burrow wg`: the WireGuard interface itself; a path to a
   * tunnel address would carry WireGuard inside WireGuard).
   */
  readonly excludeInterface?: string;
}

/** The relay a relayed path goes through. */
export interface RelayInfo {
  /** 'builtin' (the rendezvous server's relay) or 'turn' (a TURN server: the server's offer, or given by hand). */
  readonly kind: 'builtin' | 'turn';
  /** The relay's address, `HOST:PORT` (resolved). */
  readonly server: string;
  /** Our allocation on it, `HOST:PORT`: the address the partner sends to. */
  readonly relayed: string;
}

/** A path result; for a relayed (proxied) path, local and remote name the loopback proxy. */
export interface PathResult extends PunchResult {
  readonly relay?: RelayInfo;
  /** For a proxied path: the partner's address as seen on the path (a relayed address, or its direct address). */
  readonly upstream?: string;
}

/** A later change of the path a proxy forwards through. */
export interface PathChange {
  readonly path: PunchResult['path'];
  /** The partner's address on the new path. */
  readonly upstream: string;
  readonly reason: string;
  readonly elapsedMs: number;
  /** Present when birthday probing found the new path. */
  readonly birthday?: BirthdayResult;
}

/**
 * The outcome of `punchPath()`. A direct or LAN path is handed off (`proxy` false): the socket is closed and its port
 * is the caller's. A relayed path is proxied (`proxy` true): Burrow keeps running, forwarding between a loopback
 * socket the caller's program binds (`result.localPort`) and the relay, moves to a direct path when one validates
 * (`onPathChange`), and runs until `close()` or until the partner leaves (`ended`).
 */
export interface PunchSession {
  readonly result: PathResult;
  readonly proxy: boolean;
  /** Called for every later move of the proxied path (relay → direct, back to relay). */
  onPathChange(listener: (change: PathChange) => void): void;
  /** Resolves when the proxied session ends (the partner left, or close()); at once for a handoff. */
  readonly ended: Promise<void>;
  /** Ends the proxied session (CLOSE to the partner, the allocation deleted, the sockets closed). */
  close(): Promise<void>;
}

/** Splits `turn:HOST[:PORT][?transport=udp]`; throws INVALID_OPTION for anything else. */
export function parseTurnUrl(url: string): string {
  const m = /^turn:([^?]+)(\?transport=(udp|tcp|tls))?$/i.exec(url.trim());
  if (!m?.[1]) throw BurrowError.invalidOption('turn', 'not a TURN URL: expected turn:HOST[:PORT]', url);
  if (m[3] !== undefined && m[3].toLowerCase() !== 'udp') throw BurrowError.invalidOption('turn', 'only TURN over UDP is supported', url);
  return m[1];
}

/** Credentials for the built-in relay last this long (the server refuses more than a day). */
const BUILTIN_CREDENTIAL_SECONDS = 12 * 3600;

/**
 * Punches a path to `peer`, with a relay allocated in parallel (unless `relay: 'never'`): the server's offer in the
 * introduction (its built-in relay, or the TURN server it names), or `turn` from the start. Resolves once both sides
 * agreed on a path; see `PunchSession` for what happens next.
 */
export async function punchPath(options: PathOptions): Promise<PunchSession> {
  validateNames(options.name, options.peer, options.timeoutMs);
  options.signal?.throwIfAborted();
  const relayMode = options.relay ?? 'auto';
  const [first, ...fallbacks] = await resolveServers(options.server, DEFAULT_PORT, 'server');
  if (!first) throw BurrowError.invalidOption('server', 'no server given', options.server);
  const server: Endpoint = first;
  // The server registered with now (a failover moves it): the built-in relay offered in an introduction is that
  // server's own, so the allocation goes there (docs/protocol.md, "Relaying across servers").
  let current: Endpoint = first;
  const manualTurn = options.turn && relayMode !== 'never' ? await resolveEndpoint(parseTurnUrl(options.turn.url), DEFAULT_PORT, 'turn') : undefined;
  const local = parseLocal(options.local, server.address.includes(':') ? 6 : 4);
  const secret = secretBytes(options.secret);
  const keys = deriveNetworkKeys(secret);
  let udp: UdpTransport;
  try {
    udp = await UdpTransport.bind(local.address, local.port);
  } catch (err) {
    throw BurrowError.bindFailed({ transport: 'udp', address: local.address, port: local.port, role: 'local' }, err);
  }
  const agent = new PunchAgent({
    name: options.name,
    peer: options.peer,
    keys,
    server,
    ...(fallbacks.length > 0 ? { fallbacks } : {}),
    transports: [udpTransport(udp.local, relayMode === 'only' ? [] : hostCandidates(udp.local, udp.bound.family, server, options.excludeInterface !== undefined ? { excludeInterface: options.excludeInterface } : {}), 'udp')],
    timeoutMs: options.timeoutMs ?? 30_000,
    sessionNonce: randomBytes(16),
    randomBytes: (n) => randomBytes(n),
    mode: options.session === true ? 'session' : 'auto',
    relay: relayMode === 'only' ? 'only' : 'auto',
    ...(options.purpose !== undefined ? { purpose: options.purpose } : {}),
    ...(options.timing ? { timing: options.timing } : {}),
    birthday: relayMode === 'only' ? false : birthdayConfig(options),
  });

  let relayReport: RelayReport | undefined = relayMode === 'never' ? { state: 'disabled', reason: 'relaying was turned off' } : undefined;
  let relay: RelayTransport | undefined;
  let relayInfo: RelayInfo | undefined;
  const proxied: { proxy?: UdpProxy } = {};
  const listeners: ((c: PathChange) => void)[] = [];
  let connected: ((r: PunchResult) => void) | undefined;
  const firstRelayed = new Promise<PunchResult>((resolve) => {
    connected = resolve;
  });

  const transports: Record<string, DatagramTransport> = { udp };
  /** Every path selected so far, the current one last (the proxy forwards through it, and accepts from all). */
  const selections: { transport: string; remote: Endpoint }[] = [];
  /** Every pair validated so far: the proxy takes the partner's data from these too. */
  const validated: { transport: string; remote: Endpoint }[] = [];
  const selectUpstream = (transport: string, remote: Endpoint): void => {
    selections.push({ transport, remote });
    const t = transports[transport];
    if (proxied.proxy && t) proxied.proxy.setUpstream(transport, t, remote);
  };

  const onEvent = (e: PunchEvent): void => {
    switch (e.type) {
      case 'introduced':
        if (!relay && relayMode !== 'never' && !manualTurn) startOffered(e.intro.relay);
        break;
      case 'connected':
        if (e.path === 'relay' || options.session === true) {
          selectUpstream(e.transport, e.remote);
          connected?.(e.result);
        }
        break;
      case 'path-changed':
        selectUpstream(e.result.transport, { address: e.result.remoteAddress, port: e.result.remotePort });
        if (e.previous?.path !== e.result.path) {
          const change: PathChange = {
            path: e.result.path,
            upstream: endpointKey({ address: e.result.remoteAddress, port: e.result.remotePort }),
            reason: e.reason,
            elapsedMs: e.result.elapsedMs,
            ...(e.result.birthday ? { birthday: e.result.birthday } : {}),
          };
          for (const l of listeners) l(change);
        }
        break;
      case 'failover':
        current = e.to;
        break;
      case 'path-valid':
        if (validated.length < 64) {
          validated.push({ transport: e.transport, remote: e.remote });
          proxied.proxy?.allow(e.transport, e.remote);
        }
        break;
      case 'registered':
      case 'nat-mapping':
      case 'path-lost':
      case 'partner-left':
      case 'dropped':
      case 'birthday':
        break;
      default: {
        const never: never = e;
        throw new Error(`unknown event ${String(never)}`);
      }
    }
    options.onEvent?.(e);
  };

  // Before a path, the caller's signal aborts the attempt; once proxying, it ends the session cleanly (CLOSE to the
  // partner, the allocation deleted).
  const abort = new AbortController();
  let proxying = false;
  const onAbort = (): void => {
    if (proxying) run.feed({ type: 'close', now: Date.now() });
    else abort.abort();
  };
  options.signal?.addEventListener('abort', onAbort, { once: true });
  // Birthday sockets join the transports a proxy forwards through (a relayed path that moves to one of them).
  const onAction = birthdayActions(udp.local.address, {
    onOpen: (id, t) => {
      transports[id] = t;
      if (proxied.proxy) t.intercepts.push(proxied.proxy.tap(id));
    },
    onClose: (id) => {
      // eslint-disable-next-line @typescript-eslint/no-dynamic-delete -- a map of transports by id
      delete transports[id];
    },
  });
  const run = runMachine(agent, { transports: { udp }, signal: abort.signal, onEvent, onAction });
  void run.result.then(() => undefined, () => undefined).finally(() => {
    options.signal?.removeEventListener('abort', onAbort);
    // An allocation still under way when the run ended is not among the run's transports: stop it here (its
    // retransmission timer would otherwise keep the process alive for seconds).
    void relay?.close();
  });

  function startRelay(endpoint: Endpoint, kind: RelayInfo['kind'], label: string, credentials: { username: string; password: string }): void {
    if (run.settled) return;
    const rt = new RelayTransport(udp, { server: endpoint, label, client: { credentials, randomBytes: (n) => randomBytes(n) } });
    relay = rt;
    relayReport = { state: 'pending', server: label, reason: 'allocating' };
    rt.allocate().then((a) => {
      relayReport = undefined;
      relayInfo = { kind, server: endpointKey(endpoint), relayed: endpointKey(a.relayed) };
      transports.relay = rt;
      run.attach('relay', rt);
      run.feed({
        type: 'add-transport',
        transport: { id: 'relay', kind: 'relay', local: udp.local, candidates: [{ kind: 'relayed', priority: candidatePriority('relayed'), endpoint: a.relayed }] },
        now: Date.now(),
      });
    }, (err: unknown) => {
      const failure = err instanceof RelayAllocationError ? err.failure : undefined;
      relayReport = { state: 'failed', server: label, code: failure?.code ?? 0, reason: err instanceof Error ? err.message : String(err) };
      // Relayed paths only, and the relay is gone: nothing can connect; say so now rather than at the deadline.
      if (relayMode === 'only') run.fail(relayOnlyFailure(agent, relayReport));
    });
  }

  function startOffered(offer: RelayOffer | undefined): void {
    // The introduction came from the server registered with now.
    const from = current;
    if (!offer || offer.kind === 'none') {
      relayReport = {
        state: 'none-offered',
        server: endpointKey(from),
        reason: offer ? `the server at ${endpointKey(from)} offers no relay (it runs with relaying turned off)` : `the server at ${endpointKey(from)} offers no relay (it predates relays)`,
      };
      if (relayMode === 'only') run.fail(relayOnlyFailure(agent, relayReport));
      return;
    }
    if (offer.kind === 'builtin') {
      const creds = builtinCredentials(keys.relay, { expiry: Math.floor(Date.now() / 1000) + BUILTIN_CREDENTIAL_SECONDS, networkIdHex: keys.networkIdHex, name: options.name, peer: options.peer });
      startRelay(from, 'builtin', `the built-in relay at ${endpointKey(from)}`, creds);
      return;
    }
    let hostPort: string;
    try {
      hostPort = parseTurnUrl(offer.url);
    } catch {
      relayReport = { state: 'failed', server: offer.url, code: 0, reason: `the server offered a TURN URL that cannot be used: ${offer.url}` };
      return;
    }
    resolveEndpoint(hostPort, DEFAULT_PORT, 'turn').then((endpoint) => {
      startRelay(endpoint, 'turn', offer.url, { username: offer.username, password: offer.password });
    }, () => {
      relayReport = { state: 'failed', server: offer.url, code: 0, reason: `the TURN server ${offer.url} named by the server does not resolve` };
    });
  }

  if (manualTurn && options.turn) startRelay(manualTurn, 'turn', options.turn.url, { username: options.turn.username, password: options.turn.password });

  const outcome = await Promise.race([
    run.result.then((r) => ({ kind: 'done' as const, r }), (error: unknown) => ({ kind: 'error' as const, error })),
    firstRelayed.then((r) => ({ kind: 'relayed' as const, r })),
  ]);
  if (outcome.kind === 'error') {
    const e = outcome.error;
    throw e instanceof BurrowError && e.code === 'NO_PATH' && relayReport && !punchFailureOf(e)?.relay ? withRelay(e, relayReport) : e;
  }
  if (outcome.kind === 'done') {
    // A direct or LAN path, handed off: the socket (and any allocation) is closed already.
    return { result: outcome.r, proxy: false, onPathChange: () => undefined, ended: Promise.resolve(), close: () => Promise.resolve() };
  }
  // Relayed: become the proxy.
  proxying = true;
  const p = await UdpProxy.open(options.proxyProgram);
  proxied.proxy = p;
  udp.intercepts.push(p.tap('udp'));
  relay?.intercepts.push(p.tap('relay'));
  for (const [id, t] of Object.entries(transports)) if (id.startsWith('bd') && t instanceof UdpTransport) t.intercepts.push(p.tap(id));
  for (const v of validated) p.allow(v.transport, v.remote);
  for (const sel of selections) {
    const t = transports[sel.transport];
    if (t) p.setUpstream(sel.transport, t, sel.remote);
  }
  // The proxy socket stays until close(): the program keeps its loopback address for as long as Burrow runs, even
  // after the partner left.
  const ended = run.result.then(() => undefined, () => undefined);
  const result: PathResult = {
    ...outcome.r,
    localAddress: p.program.address,
    localPort: p.program.port,
    remoteAddress: p.address.address,
    remotePort: p.address.port,
    upstream: endpointKey({ address: outcome.r.remoteAddress, port: outcome.r.remotePort }),
    ...(relayInfo ? { relay: relayInfo } : {}),
  };
  return {
    result,
    proxy: true,
    onPathChange: (l) => {
      listeners.push(l);
    },
    ended,
    close: async () => {
      run.feed({ type: 'close', now: Date.now() });
      await ended;
      await p.close();
    },
  };
}

/** The NO_PATH error again, its failure and message extended by what became of the relay. */
function withRelay(error: BurrowError, relay: RelayReport): BurrowError {
  const f = punchFailureOf(error);
  if (!f || f.stage !== 'no-path') return error;
  return punchFailureError({ ...f, relay });
}

/** Relayed paths only, and the relay failed: no path can come, whatever stage the punch reached. */
function relayOnlyFailure(agent: PunchAgent, relay: RelayReport): BurrowError {
  return punchFailureError({ ...agent.failure(), stage: 'no-path', relay: { ...relay, only: true } });
}
