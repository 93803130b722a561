/**
 * `netcheck()`: RFC 5780 NAT behaviour discovery against a STUN server (src/core/nat/netcheck.ts decides; this
 * driver resolves the server, finds the local address that reaches it, binds the sockets and runs the machine).
 */
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { familyOf, normaliseAddress, parseHostPort, type Endpoint } from '../codec/address.js';
import { DEFAULT_PORT } from '../codec/messages.js';
import { DEFAULT_LIFETIME_TRIALS_MS, NetcheckMachine, type NetcheckEvent, type NetcheckReport } from '../core/nat/netcheck.js';
import { BurrowError } from '../errors.js';
import { runMachine } from './driver.js';
import type { DatagramTransport } from './transport.js';
import { UdpTransport } from './transport.js';

export type { NetcheckReport, NetcheckEvent } from '../core/nat/netcheck.js';

export interface NetcheckOptions {
  /** `HOST:PORT` of the STUN server (port 3478 if left out). A name is tried over IPv4 and IPv6. */
  readonly server: string;
  /** A STUN server to learn the public IPv6 address from, when `server` has no IPv6 address. */
  readonly server6?: string;
  /** Estimate the binding lifetime (takes up to the longest trial: 8 minutes by default). */
  readonly lifetime?: boolean;
  /** The lifetime trials, milliseconds after the mapping was made (default 5 s ... 480 s). */
  readonly lifetimeTrialsMs?: readonly number[];
  /** The local IP address to test from (default: the one the system routes to the server from). */
  readonly localAddress?: string;
  readonly signal?: AbortSignal;
  readonly onEvent?: (event: NetcheckEvent) => void;
}

/** The server's addresses: all of them for a name (one per family), the literal itself otherwise. */
async function resolveBoth(text: string): Promise<{ v4: Endpoint | undefined; v6: Endpoint | undefined }> {
  const parsed = parseHostPort(text, DEFAULT_PORT);
  if (!parsed.ok) throw BurrowError.invalidOption('server', `not HOST:PORT (${parsed.reason})`, text);
  if (parsed.host === '') throw BurrowError.invalidOption('server', 'no host', text);
  const literal = normaliseAddress(parsed.host);
  if (literal) {
    const e = { address: literal, port: parsed.port };
    return familyOf(literal) === 4 ? { v4: e, v6: undefined } : { v4: undefined, v6: e };
  }
  const { lookup } = await import('node:dns/promises');
  const all = await lookup(parsed.host, { all: true }).catch((err: unknown) => {
    throw BurrowError.invalidOption('server', `cannot resolve the host "${parsed.host}" (${err instanceof Error ? err.message : String(err)})`, text);
  });
  const pick = (family: number): Endpoint | undefined => {
    const a = all.find((r) => r.family === family);
    return a ? { address: normaliseAddress(a.address) ?? a.address, port: parsed.port } : undefined;
  };
  return { v4: pick(4), v6: pick(6) };
}

/** The local address the system uses toward `to` (a connected UDP socket, nothing sent); undefined without a route. */
async function routeSource(to: Endpoint): Promise<string | undefined> {
  const socket = dgram.createSocket(familyOf(to.address) === 6 ? 'udp6' : 'udp4');
  try {
    return await new Promise<string | undefined>((resolve) => {
      socket.once('error', () => { resolve(undefined); });
      socket.connect(to.port, to.address, () => {
        try {
          resolve(normaliseAddress(socket.address().address) ?? socket.address().address);
        } catch {
          resolve(undefined);
        }
      });
    });
  } finally {
    await new Promise<void>((resolve) => { socket.close(() => { resolve(); }); });
  }
}

export async function netcheck(options: NetcheckOptions): Promise<NetcheckReport> {
  options.signal?.throwIfAborted();
  const resolved = await resolveBoth(options.server);
  const { v4 } = resolved;
  let { v6 } = resolved;
  if (options.server6 !== undefined && v6 === undefined) {
    v6 = (await resolveBoth(options.server6)).v6;
    if (!v6) throw BurrowError.invalidOption('server6', 'the host has no IPv6 address', options.server6);
  }
  const primary = v4 ?? v6;
  if (!primary) throw BurrowError.invalidOption('server', 'the host has no address', options.server);
  const localIp = options.localAddress ?? (await routeSource(primary));
  if (!localIp) {
    throw new BurrowError('SERVER_UNREACHABLE', `this host has no route to ${primary.address}: no network, or no address of that family.`, { details: { server: options.server } });
  }
  const local6 = v4 && v6 ? await routeSource(v6) : undefined;
  const trials = options.lifetime ? options.lifetimeTrialsMs ?? DEFAULT_LIFETIME_TRIALS_MS : undefined;
  const ids = ['a', 'b', 'c', ...(trials ? ['y', ...trials.map((_, i) => `x${i}`)] : [])];
  const transports: Record<string, DatagramTransport> = {};
  const locals: Record<string, Endpoint> = {};
  try {
    for (const id of ids) {
      const t = await UdpTransport.bind(localIp, 0);
      transports[id] = t;
      locals[id] = t.local;
    }
    if (local6 !== undefined) {
      const t = await UdpTransport.bind(local6, 0);
      transports.v6 = t;
      locals.v6 = t.local;
    }
  } catch (err) {
    await Promise.all(Object.values(transports).map((t) => t.close()));
    throw BurrowError.bindFailed({ transport: 'udp', address: localIp, port: 0, role: 'local' }, err);
  }
  const machine = new NetcheckMachine({
    server: primary,
    server6: v4 ? v6 : undefined,
    locals,
    lifetimeTrialsMs: trials,
    randomBytes: (n) => randomBytes(n),
  });
  // A sub-millisecond clock: round trips on a LAN are well under 1 ms.
  return runMachine(machine, { transports, signal: options.signal, onEvent: options.onEvent, now: () => performance.now() }).result;
}
