/** Host candidates: the local addresses a partner on the same LAN can reach us at. */
import { networkInterfaces } from 'node:os';
import { familyOf, normaliseAddress, type Endpoint, type Family } from '../codec/address.js';
import { MAX_HOST_CANDIDATES } from '../codec/messages.js';

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}

/**
 * For a socket bound to one address, that address; for a wildcard socket, every non-loopback,
 * non-link-local interface address of the family, each with the socket's port.
 */
export function hostCandidates(bound: Endpoint, family: Family): Endpoint[] {
  if (!isWildcard(bound.address)) return [bound];
  const out: Endpoint[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) {
      if (info.internal) continue;
      const address = normaliseAddress(info.address);
      if (!address || familyOf(address) !== family) continue;
      if (family === 6 && /^fe[89ab]/i.test(address)) continue; // link-local needs a scope id
      out.push({ address, port: bound.port });
    }
  }
  return out.slice(0, MAX_HOST_CANDIDATES);
}
