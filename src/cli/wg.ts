/** `burrow wg`: a thin shell over `discoverWireGuard()` (src/node/wg.ts); progress on stderr, the result on stdout. */
import { parseArgs } from 'node:util';
import { endpointKey } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { discoverWireGuard, type WgDiscoveryResult, type WgEvent } from '../node/wg.js';
import { oneOf, resolveSecrets, say, seconds, type Io } from './common.js';

export const WG_USAGE = `burrow wg --interface IFACE --server HOST:PORT --secret-file FILE [--continuous]
           [--interval SECONDS] [--timeout SECONDS] [--format text|json] [--quiet]`;

function short(key: string): string {
  return `${key.slice(0, 8)}…`;
}

function describe(e: WgEvent): string | undefined {
  switch (e.type) {
    case 'interface':
      return `interface key ${short(e.publicKey)}, listen port ${e.listenPort}, ${e.peers} peer(s)`;
    case 'server-peer':
      return `added the rendezvous server as WireGuard peer ${short(e.serverKey)} at ${endpointKey(e.endpoint)} (no allowed IPs: it carries no traffic)`;
    case 'left-alone':
      return `peer ${short(e.key)} is on the rendezvous server's host (${endpointKey(e.endpoint)}): left as configured`;
    case 'self':
      return e.endpoint
        ? `the server sees this interface's WireGuard at ${endpointKey(e.endpoint)} (NAT mapping: ${e.mapping})`
        : `waiting for this interface's WireGuard to handshake with the server (NAT mapping: ${e.mapping})`;
    case 'endpoint-set':
      return `peer ${short(e.key)}: endpoint ${endpointKey(e.endpoint)}${e.lan ? ' (LAN: same NAT)' : ''} (${e.reason})`;
    case 'status':
      return `peer ${short(e.key)}: ${e.status}`;
    case 'interface-missing':
      return `interface missing, retrying: ${e.detail}`;
    case 'retry':
      return e.detail;
  }
}

function formatResult(r: WgDiscoveryResult, format: 'text' | 'json'): string {
  if (format === 'json') {
    return `${JSON.stringify({
      interface: r.interface,
      publicKey: r.publicKey,
      selfEndpoint: r.selfEndpoint ? endpointKey(r.selfEndpoint) : null,
      mapping: r.mapping,
      elapsedMs: r.elapsedMs,
      peers: r.peers.map((p) => ({ key: p.key, status: p.status, endpoint: p.endpoint ? endpointKey(p.endpoint) : null })),
    })}\n`;
  }
  return r.peers.map((p) => `${p.key}\t${p.status}\t${p.endpoint ? endpointKey(p.endpoint) : '(none)'}\n`).join('');
}

export async function runWg(argv: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      interface: { type: 'string', short: 'i' },
      server: { type: 'string' },
      'secret-file': { type: 'string' },
      secret: { type: 'string' },
      continuous: { type: 'boolean' },
      interval: { type: 'string' },
      timeout: { type: 'string' },
      format: { type: 'string' },
      quiet: { type: 'boolean', short: 'q' },
    },
    allowPositionals: false,
    strict: true,
  });
  if (values.interface === undefined) throw BurrowError.usage('--interface IFACE is required');
  if (values.server === undefined) throw BurrowError.usage('--server HOST:PORT is required');
  const intervalMs = seconds('--interval', values.interval, 10);
  if (intervalMs < 1000) throw BurrowError.usage(`--interval ${values.interval ?? ''} is below the 1 s minimum`, 'the interval bounds how often burrow asks the server; use 1 or more.');
  const timeoutMs = seconds('--timeout', values.timeout, 30);
  const format = oneOf('--format', values.format, ['text', 'json'] as const, 'text');
  const [secret] = await resolveSecrets(io, values);
  const quiet = values.quiet === true;
  const result = await discoverWireGuard({
    interface: values.interface,
    server: values.server,
    secret: secret ?? '',
    continuous: values.continuous === true,
    intervalMs,
    timeoutMs,
    signal: io.signal,
    onEvent: (e) => {
      const line = describe(e);
      if (line !== undefined && !quiet) say(io, line);
    },
  });
  io.stdout.write(formatResult(result, format));
  return 0;
}
