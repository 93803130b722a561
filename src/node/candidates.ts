/** Host candidates: the local addresses a partner on the same LAN can reach us at. */
import { networkInterfaces } from 'node:os';
import { familyOf, normaliseAddress, type Endpoint, type Family } from '../codec/address.js';
import { MAX_HOST_CANDIDATES } from '../codec/messages.js';

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

function isLoopback(address: string): boolean {
  return address === '::1' || address.startsWith('127.');
}

export interface HostCandidateOptions {
  /** An interface whose addresses are left out (e.g. a WireGuard interface's own). */
  readonly excludeInterface?: string;
  /** At most this many (default MAX_HOST_CANDIDATES). */
  readonly limit?: number;
}

/**
 * For a socket bound to one address, that address; for a wildcard socket, every non-loopback,
 * non-link-local interface address of the family, each with the socket's port. With a server on
 * loopback everything happens on this machine, so the only candidate is the loopback address.
 */
export function hostCandidates(bound: Endpoint, family: Family, server?: Endpoint, options: HostCandidateOptions = {}): Endpoint[] {
  if (!isWildcard(bound.address)) return [bound];
  if (server && isLoopback(server.address)) return [{ address: family === 6 ? '::1' : '127.0.0.1', port: bound.port }];
  const out: Endpoint[] = [];
  for (const [name, list] of Object.entries(networkInterfaces())) {
    if (name === options.excludeInterface) continue;
    for (const info of list ?? []) {
      if (info.internal) continue;
      const address = normaliseAddress(info.address);
      if (!address || familyOf(address) !== family) continue;
      if (family === 6 && /^fe[89ab]/i.test(address)) continue; // link-local needs a scope id
      out.push({ address, port: bound.port });
    }
  }
  return out.slice(0, options.limit ?? MAX_HOST_CANDIDATES);
}
