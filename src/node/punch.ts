/**
 * `punch()`: the Node driver around the punch agent (src/core/punch). It binds one UDP socket, runs the agent under
 * the generic driver loop (driver.ts), and always releases the socket before it settles, so the caller can hand the
 * same local port to another program at once.
 */
import { randomBytes } from 'node:crypto';
import { checkName, DEFAULT_PORT, type PeerMode } from '../codec/messages.js';
import { PunchAgent, udpTransport, type PunchEvent, type PunchResult, type PunchTiming } from '../core/punch/index.js';
import { deriveNetworkKeys } from '../crypto/keys.js';
import { BurrowError } from '../errors.js';
import { hostCandidates } from './candidates.js';
import { runMachine } from './driver.js';
import { UdpTransport } from './transport.js';
import { parseLocal, resolveServers } from './udp.js';

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
  const [server, ...fallbacks] = await resolveServers(options.server, DEFAULT_PORT, 'server');
  if (!server) throw BurrowError.invalidOption('server', 'no server given', options.server);
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
  });
  return runMachine(agent, { transports: { udp }, signal: options.signal, onEvent: options.onEvent }).result;
}
