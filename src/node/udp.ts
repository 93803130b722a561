/**
 * Small helpers shared by the UDP drivers: opening and closing sockets as promises, address
 * normalisation between Node's view (IPv4-mapped IPv6 on dual-stack sockets) and ours, and sends that
 * never throw.
 */
import dgram from 'node:dgram';
import dns from 'node:dns';
import { isIP } from 'node:net';
import { familyOf, normaliseAddress, parseHostPort, type Endpoint, type Family } from '../codec/address.js';
import { BurrowError } from '../errors.js';

export interface BoundSocket {
  readonly socket: dgram.Socket;
  readonly family: Family;
  /** True for a udp6 socket that also carries IPv4 (addresses appear as ::ffff:a.b.c.d). */
  readonly dualStack: boolean;
  readonly local: Endpoint;
}

export async function bindUdp(address: string, port: number, opts: { dualStack?: boolean; recvBufferSize?: number } = {}): Promise<BoundSocket> {
  const family = familyOf(address);
  const dualStack = family === 6 && opts.dualStack === true;
  const socket = dgram.createSocket({
    type: family === 6 ? 'udp6' : 'udp4',
    ipv6Only: family === 6 && !dualStack,
    lookup: literalLookup,
    ...(opts.recvBufferSize !== undefined ? { recvBufferSize: opts.recvBufferSize } : {}),
  });
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => {
      socket.close();
      reject(err);
    };
    socket.once('error', onError);
    socket.bind(port, address, () => {
      socket.off('error', onError);
      resolve();
    });
  });
  const a = socket.address();
  return { socket, family, dualStack, local: { address: normaliseAddress(a.address) ?? a.address, port: a.port } };
}

/**
 * dgram resolves every destination, even an IP literal, through dns.lookup, which answers on the next
 * tick; we only ever send to literals, so answer at once (names still go to dns.lookup).
 */
function literalLookup(hostname: string, options: dns.LookupOneOptions, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = isIP(hostname);
  if (family !== 0) {
    callback(null, hostname, family);
    return;
  }
  dns.lookup(hostname, options, callback);
}

export function closeUdp(socket: dgram.Socket): Promise<void> {
  return new Promise((resolve) => {
    try {
      socket.close(() => {
        resolve();
      });
    } catch {
      resolve(); // already closed
    }
  });
}

/** Our endpoint from Node's remote info. */
export function endpointOf(rinfo: { address: string; port: number }): Endpoint {
  // The kernel's text for IPv4 and IPv4-mapped addresses is canonical already: no need to re-parse it
  // for every datagram (the server's hot path).
  const a = rinfo.address;
  if (!a.includes(':')) return { address: a, port: rinfo.port };
  if (a.startsWith('::ffff:') && a.includes('.', 7)) return { address: a.slice(7), port: rinfo.port };
  return { address: normaliseAddress(a) ?? a, port: rinfo.port };
}

/**
 * Sends without throwing; errors (unreachable networks for a candidate, a closed socket) go to
 * `onError`. Calls `done` when the datagram has left, so a socket can be closed only after its last send.
 */
export function sendUdp(
  bound: BoundSocket,
  to: Endpoint,
  data: Uint8Array,
  onError: (err: Error) => void,
  done?: () => void,
): void {
  const address = bound.dualStack && familyOf(to.address) === 4 ? `::ffff:${to.address}` : to.address;
  try {
    bound.socket.send(data, to.port, address, (err) => {
      if (err) onError(err);
      done?.();
    });
  } catch (err) {
    onError(err instanceof Error ? err : new Error(String(err)));
    done?.();
  }
}

/**
 * Sends and forgets: no completion callback (Node then needs no request object or extra tick per
 * datagram); a failure arrives as the socket's 'error' event, which the caller must handle. The server's
 * hot path.
 */
export function sendUdpNoCallback(bound: BoundSocket, to: Endpoint, data: Uint8Array): void {
  const address = bound.dualStack && familyOf(to.address) === 4 ? `::ffff:${to.address}` : to.address;
  try {
    bound.socket.send(data, to.port, address);
  } catch {
    // a closed socket: nothing to do
  }
}

/** Resolves `HOST:PORT` to an IP endpoint (IPv4 preferred, like most tools). */
export async function resolveEndpoint(text: string, defaultPort: number, what: string): Promise<Endpoint> {
  const parsed = parseHostPort(text, defaultPort);
  if (!parsed.ok) throw BurrowError.invalidOption(what, `not HOST:PORT (${parsed.reason})`, text);
  if (parsed.host === '') throw BurrowError.invalidOption(what, 'no host', text);
  const literal = normaliseAddress(parsed.host);
  if (literal) return { address: literal, port: parsed.port };
  try {
    const { lookup } = await import('node:dns/promises'); // only for names, off the common path
    const r = await lookup(parsed.host, { family: 0, order: 'ipv4first' });
    return { address: normaliseAddress(r.address) ?? r.address, port: parsed.port };
  } catch (err) {
    throw BurrowError.invalidOption(what, `cannot resolve the host "${parsed.host}" (${err instanceof Error ? err.message : String(err)})`, text);
  }
}

/**
 * Several servers of one deployment: `HOST:PORT[,HOST:PORT…]`, where a host name counts once per address it resolves
 * to. In the order given (a name's addresses in the resolver's order, IPv4 first), without duplicates, and of the
 * first one's address family only (one socket talks to all of them).
 */
export async function resolveServers(text: string, defaultPort: number, what: string): Promise<Endpoint[]> {
  const out: Endpoint[] = [];
  for (const part of text.split(',').map((p) => p.trim()).filter((p) => p !== '')) {
    const parsed = parseHostPort(part, defaultPort);
    if (!parsed.ok) throw BurrowError.invalidOption(what, `not HOST:PORT (${parsed.reason})`, part);
    if (parsed.host === '') throw BurrowError.invalidOption(what, 'no host', part);
    const literal = normaliseAddress(parsed.host);
    let addresses: string[];
    if (literal) {
      addresses = [literal];
    } else {
      try {
        const { lookup } = await import('node:dns/promises');
        addresses = (await lookup(parsed.host, { family: 0, order: 'ipv4first', all: true })).map((r) => normaliseAddress(r.address) ?? r.address);
      } catch (err) {
        throw BurrowError.invalidOption(what, `cannot resolve the host "${parsed.host}" (${err instanceof Error ? err.message : String(err)})`, part);
      }
    }
    for (const address of addresses) {
      const e = { address, port: parsed.port };
      if (!out.some((o) => o.address === e.address && o.port === e.port)) out.push(e);
    }
  }
  const first = out[0];
  if (!first) throw BurrowError.invalidOption(what, 'no server given', text);
  return out.filter((e) => familyOf(e.address) === familyOf(first.address));
}

/** Parses `--local [ADDR:]PORT` against the family the server needs. */
export function parseLocal(text: string | undefined, family: Family): Endpoint {
  const wildcard = family === 6 ? '::' : '0.0.0.0';
  if (text === undefined) return { address: wildcard, port: 0 };
  const parsed = parseHostPort(text);
  if (!parsed.ok) throw BurrowError.invalidOption('local', `not [ADDR:]PORT (${parsed.reason})`, text);
  if (parsed.host === '') return { address: wildcard, port: parsed.port };
  const address = normaliseAddress(parsed.host);
  if (!address) throw BurrowError.invalidOption('local', `the address "${parsed.host}" is not an IP address`, text);
  if (familyOf(address) !== family) {
    throw BurrowError.invalidOption('local', `IPv${familyOf(address)}, but the server is IPv${family}: use an address of the same family`, text);
  }
  return { address, port: parsed.port };
}
