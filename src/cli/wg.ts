/** `burrow wg`: a thin shell over `discoverWireGuard()` (src/node/wg.ts); progress on stderr, the result on stdout. */
import { endpointKey } from '../codec/address.js';
import type { WgPathReason } from '../core/wg-relay.js';
import { discoverWireGuard, type WgDiscoveryResult, type WgEvent } from '../node/wg.js';
import { failoverLine, ms, resolveSecrets, say, watchServer, type Io } from './common.js';
import { usageError } from './parse.js';
import type { Parsed } from './schema.js';

function short(key: string): string {
  return `${key.slice(0, 8)}…`;
}

const PATH_REASONS: Record<WgPathReason, string> = {
  'no-direct-path': 'no direct path: through the relay',
  roamed: "moved to direct: the peer's packets arrived straight from its address",
  upgrade: 'moved to direct: a handshake on the direct endpoint',
  'trial-failed': 'the direct endpoint brought no handshake: back to the relay',
  'relay-restored': 'a new relay session',
};

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
    case 'failover':
      return `${failoverLine(e.from, e.to)} (WireGuard's server peer moved there)`;
    case 'relay-session':
      if (e.state === 'starting') return `peer ${short(e.key)}: no direct path, starting a relay session with its burrow wg`;
      if (e.state === 'ready') return `peer ${short(e.key)}: relay session ready: ${e.relay ? `${e.relay.kind === 'builtin' ? 'built-in relay' : 'TURN'} ${e.relay.server}, relayed address ${e.relay.relayed}` : 'relayed'}, proxy ${endpointKey(e.proxy)}`;
      return `peer ${short(e.key)}: relay session ended (retrying): ${e.detail}`;
    case 'path':
      return `peer ${short(e.key)}: path ${e.path}, endpoint ${endpointKey(e.endpoint)} (${PATH_REASONS[e.reason]})`;
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
      peers: r.peers.map((p) => ({ key: p.key, status: p.status, endpoint: p.endpoint ? endpointKey(p.endpoint) : null, path: p.path, ...(p.relay ? { relay: p.relay } : {}) })),
    })}\n`;
  }
  return r.peers.map((p) => `${p.key}\t${p.status}\t${p.endpoint ? endpointKey(p.endpoint) : '(none)'}${p.path === 'relay' ? `\trelay${p.relay ? ` ${p.relay.server}` : ''}` : ''}\n`).join('');
}

export async function wgCommand(parsed: Parsed<'wg'>, io: Io): Promise<number> {
  const { values } = parsed;
  const intervalMs = ms(values.interval);
  if (intervalMs < 1000) throw usageError(`--interval ${values.interval} is below the 1 s minimum`, 'the interval bounds how often burrow asks the server; use 1 or more');
  const timeoutMs = ms(values.timeout);
  const [secret] = await resolveSecrets(io, values, parsed.sources['secret-file'] === 'env');
  // The first `self` event follows the server's first answer.
  const watch = watchServer(io, values.server, timeoutMs, 'UDP');
  let result: WgDiscoveryResult;
  try {
    result = await discoverWireGuard({
      interface: values.interface,
      server: values.server,
      secret: secret ?? '',
      continuous: values.continuous,
      relay: values.relay,
      intervalMs,
      timeoutMs,
      signal: io.signal,
      onEvent: (e) => {
        if (e.type === 'self') watch.answered();
        const line = describe(e);
        if (line !== undefined) say(io, line);
      },
    });
  } finally {
    watch.stop();
  }
  io.stdout.write(formatResult(result, values.format));
  return 0;
}
