/**
 * `connectStream()`: a TCP path to the partner by simultaneous open (RFC 793 figure 8), then the
 * encrypted stream over it.
 *
 * 1. Connect to the rendezvous server over TCP from a local port P and register on that connection
 *    (PunchMachine in TCP mode). The server sees P's public TCP mapping and pushes the introduction down
 *    the same connection, which stays open (it also keeps the mapping alive).
 * 2. Through NATs: from the same port P (SO_REUSEADDR, set by libuv on every TCP bind) connect to the
 *    partner's public mapping. Both sides do this at once; each SYN opens the sender's NAT for the
 *    other's. A refused, reset or unanswered attempt is retried every RETRY_MS until the deadline,
 *    unlike punchhole's single connect().
 *    Behind one NAT (both public IPs equal; NATs rarely hairpin) the LAN is used instead. There is no
 *    NAT to open there, and a simultaneous open would mostly meet resets, so each side listens on a
 *    second port L, advertised as its host candidate, and the side whose name sorts first connects.
 * 3. On the first connection that completes the authenticated handshake (src/core/secure-session.ts),
 *    everything else is closed and the stream is returned.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { endpointKey, type Endpoint } from '../codec/address.js';
import { checkName } from '../codec/messages.js';
import { splitStunStream } from '../codec/stun.js';
import { PunchMachine, type PunchAction, type PunchEvent, type PunchResult } from '../core/punch.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { BurrowError, isBurrowError } from '../errors.js';
import { hostCandidates } from './candidates.js';
import { DEFAULT_PORT } from './punch.js';
import { SecureStream, StreamVersionError } from './secure-stream.js';
import { endpointOf, parseLocal, resolveEndpoint } from './udp.js';

export interface StreamConnectOptions {
  readonly server: string;
  readonly secret: string | Uint8Array;
  readonly name: string;
  readonly peer: string;
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: PunchEvent) => void;
  /** Local `[ADDR:]PORT`; default any address, a free port. */
  readonly local?: string;
}

export interface StreamConnection {
  readonly stream: SecureStream;
  readonly result: PunchResult;
}

/** One connect() attempt's budget, and the pause before the next one. */
const ATTEMPT_MS = 400;
const RETRY_MS = 25;

export async function connectStream(options: StreamConnectOptions): Promise<StreamConnection> {
  for (const [flag, value] of [['--as', options.name], ['--to', options.peer]] as const) {
    const problem = checkName(value);
    if (problem !== undefined) throw BurrowError.usage(`the name given to ${flag} ${problem}`);
  }
  if (options.name === options.peer) throw BurrowError.usage(`--as and --to are both "${options.name}"; each side names itself and the other`);
  options.signal?.throwIfAborted();
  const server = await resolveEndpoint(options.server, DEFAULT_PORT, 'server');
  const family = server.address.includes(':') ? 6 : 4;
  const local = parseLocal(options.local, family);
  const secret = typeof options.secret === 'string' ? Buffer.from(options.secret, 'utf8') : options.secret;
  if (secret.length === 0) throw BurrowError.usage('the network secret is empty');
  const keys = deriveNetworkKeys(secret);
  const timeoutMs = options.timeoutMs ?? 30_000;
  const started = Date.now();
  const deadline = started + timeoutMs;

  const listener = await listenLan(local.address);
  let control: Awaited<ReturnType<typeof openControl>>;
  try {
    control = await openControl(server, local, deadline, options.signal);
  } catch (err) {
    listener.close();
    throw err;
  }
  const localPort = control.localPort ?? 0;
  const lanPort = (listener.address() as net.AddressInfo).port;
  const localAddress = local.address;
  const stats = { attempts: 0, refused: 0, timedOut: 0, handshakesFailed: 0, lastError: '' };
  const sessionNonce = randomBytes(16);
  const machine = new PunchMachine({
    name: options.name,
    peer: options.peer,
    keys,
    server,
    localAddress,
    localPort,
    hosts: hostCandidates({ address: local.address, port: lanPort }, family, server),
    timeoutMs: Math.max(1, deadline - Date.now()),
    sessionNonce,
    randomBytes: (n) => randomBytes(n),
    transport: 'tcp',
    timing: { waitingRefreshMs: 10_000, checkingRefreshMs: 10_000 },
    describeFailure: () =>
      `${stats.attempts} TCP connection attempts failed (${stats.refused} refused or reset, ${stats.timedOut} unanswered, ` +
      `${stats.handshakesFailed} failed handshakes${stats.lastError ? `; last: ${stats.lastError}` : ''}). Likely causes: a NAT that allocates a new port per destination ` +
      `(symmetric), or one that answers unsolicited SYNs with a reset; try \`burrow punch\` (UDP), which works through ` +
      'more NATs, or a relay.',
  });

  return new Promise<StreamConnection>((resolve, reject) => {
    let timer: NodeJS.Timeout | undefined;
    let settled = false;
    let pending: Uint8Array = new Uint8Array(0);
    const attempts = new Set<net.Socket>();
    let connecting = false;

    const settle = (finish: () => void): void => {
      if (settled) return;
      settled = true;
      if (timer) clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      for (const s of attempts) s.destroy();
      attempts.clear();
      control.socket.destroy();
      listener.close();
      finish();
    };
    const execute = (actions: PunchAction[]): void => {
      for (const a of actions) {
        switch (a.type) {
          case 'send':
            control.socket.write(a.data);
            break;
          case 'event':
            options.onEvent?.(a.event);
            if (a.event.type === 'introduced' && !connecting) {
              connecting = true;
              startConnecting(a.event.intro.peerMapped, a.event.intro.peerHosts, a.event.sameNat, a.event.intro.peerNonce);
            }
            break;
          case 'done':
            break; // resolved by the winning handshake below
          case 'fail': {
            const error = a.error;
            settle(() => {
              reject(error);
            });
            break;
          }
        }
      }
      if (settled) return;
      if (timer) clearTimeout(timer);
      const at = machine.nextTimeoutAt();
      if (at !== undefined) timer = setTimeout(() => {
        execute(machine.handle({ type: 'timer', now: Date.now() }));
      }, Math.max(0, at - Date.now()));
    };

    const startConnecting = (peerPublic: Endpoint, peerHosts: readonly Endpoint[], sameNat: boolean, peerNonce: Uint8Array): void => {
      // Behind one NAT (no hairpinning in general) the LAN address; otherwise the public mapping.
      const weAreLow = options.name < options.peer;
      const context = Buffer.concat([Buffer.from('burrow/v1 tcp'), weAreLow ? sessionNonce : peerNonce, weAreLow ? peerNonce : sessionNonce]);
      // Host candidates carry the LAN listener's port; "lan" unless the address is the public one too
      // (no NAT, e.g. both on one machine).
      const lanTargets = sameNat ? peerHosts : [];
      const isLan = (e: Endpoint): boolean => e.address !== peerPublic.address;
      if (lanTargets.length === 0) {
        attempt(peerPublic, context, false, localPort);
        return;
      }
      if (weAreLow) for (const target of lanTargets) attempt(target, context, isLan(target), 0);
      else lanAccept = { context, isLan };
    };
    /** Set on the side that accepts on the LAN, once it knows the partner. */
    let lanAccept: { context: Uint8Array; isLan: (e: Endpoint) => boolean } | undefined;
    listener.on('connection', (socket: net.Socket) => {
      socket.on('error', () => undefined);
      if (settled || !lanAccept) {
        socket.destroy(); // not expecting anyone (yet): never hold a connection we will not use
        return;
      }
      const accept = lanAccept;
      attempts.add(socket);
      const from = endpointOf({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 });
      secure(socket, from, accept.context, accept.isLan(from), () => {
        attempts.delete(socket);
        socket.destroy();
        stats.handshakesFailed++;
      });
    });

    /** Runs the handshake on a connected socket; the first to complete wins. */
    const secure = (socket: net.Socket, remote: Endpoint, context: Uint8Array, lan: boolean, onFailure: (detail: string) => void): void => {
      SecureStream.open(socket, { name: options.name, peer: options.peer, authKey: keys.streamAuth, context, timeoutMs: 5000, ...(options.signal ? { signal: options.signal } : {}) }).then(
        (stream) => {
          if (settled) {
            stream.destroy();
            return;
          }
          attempts.delete(socket);
          for (const a of machine.handle({ type: 'connected', remote, now: Date.now() })) {
            if (a.type === 'event') options.onEvent?.(a.event);
          }
          const result: PunchResult = {
            localAddress,
            localPort: socket.localPort ?? localPort,
            remoteAddress: remote.address,
            remotePort: remote.port,
            path: lan ? 'lan' : 'direct',
            elapsedMs: Date.now() - started,
            peer: options.peer,
          };
          settle(() => {
            resolve({ stream, result });
          });
        },
        (err: unknown) => {
          // Our partner (its HELLO authenticated) on an incompatible release: retrying cannot help.
          if (err instanceof StreamVersionError) {
            settle(() => {
              reject(err);
            });
            return;
          }
          // A handshake that fails authentication is someone else, not our partner: keep trying.
          onFailure(isBurrowError(err) ? err.message : String(err));
        },
      );
    };

    const attempt = (target: Endpoint, context: Uint8Array, lan: boolean, fromPort: number): void => {
      if (settled || Date.now() >= deadline) return;
      stats.attempts++;
      const socket = net.connect({ host: target.address, port: target.port, localAddress, localPort: fromPort, allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 15_000 });
      attempts.add(socket);
      let done = false;
      const retry = (why: 'refused' | 'timeout' | 'handshake', detail: string): void => {
        if (done) return;
        done = true;
        attempts.delete(socket);
        socket.destroy();
        if (why === 'refused') stats.refused++;
        else if (why === 'timeout') stats.timedOut++;
        else stats.handshakesFailed++;
        stats.lastError = detail;
        if (!settled) setTimeout(() => { attempt(target, context, lan, fromPort); }, RETRY_MS).unref();
      };
      const budget = setTimeout(() => { retry('timeout', 'no answer'); }, ATTEMPT_MS);
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(budget);
        retry('refused', err.code ?? err.message);
      });
      socket.once('connect', () => {
        clearTimeout(budget);
        if (settled) return;
        secure(socket, target, context, lan, (detail) => {
          retry('handshake', detail);
        });
      });
    };

    const onAbort = (): void => {
      settle(() => {
        reject(BurrowError.aborted());
      });
    };
    options.signal?.addEventListener('abort', onAbort, { once: true });
    control.socket.on('data', (chunk: Buffer) => {
      const split = splitStunStream(pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk);
      if ('error' in split) {
        control.socket.destroy();
        return;
      }
      pending = split.rest;
      for (const m of split.messages) execute(machine.handle({ type: 'datagram', from: server, data: m, now: Date.now() }));
    });
    control.socket.on('error', () => undefined);
    control.socket.on('close', () => {
      if (!settled && !connecting) {
        settle(() => {
          reject(BurrowError.serverUnreachable(endpointKey(server), 1, Math.round((Date.now() - started) / 100) / 10));
        });
      }
    });
    execute(machine.handle({ type: 'start', now: Date.now() }));
  });
}

/** The TCP connection to the rendezvous server, from the local port every later attempt reuses. */
function openControl(server: Endpoint, local: Endpoint, deadline: number, signal: AbortSignal | undefined): Promise<{ socket: net.Socket; localPort: number | undefined }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: server.address, port: server.port, localAddress: local.address, localPort: local.port, noDelay: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(BurrowError.serverUnreachable(endpointKey(server), 1, Math.round((deadline - Date.now()) / 1000)));
    }, Math.max(1, Math.min(deadline - Date.now(), 10_000)));
    const onAbort = (): void => {
      socket.destroy();
      clearTimeout(timer);
      reject(BurrowError.aborted());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      resolve({ socket, localPort: socket.localPort });
    });
    socket.once('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      reject(
        err.code === 'EADDRINUSE'
          ? BurrowError.usage(`cannot bind TCP ${endpointKey(local)} (in use)`, 'choose another --local port.')
          : new BurrowError('SERVER_UNREACHABLE', `cannot reach the rendezvous server at ${endpointKey(server)} over TCP (${err.code ?? err.message}): ` +
            'it may not be running, or a firewall blocks TCP to that port. Check the address, and that TCP is open as well as UDP.', { cause: err }),
      );
    });
  });
}

/** The LAN listener (see step 2 above): any address of ours, a free port. */
function listenLan(address: string): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: 15_000 });
    server.once('error', reject);
    server.listen({ host: address, port: 0 }, () => {
      server.off('error', reject);
      server.on('error', () => undefined);
      resolve(server);
    });
  });
}
