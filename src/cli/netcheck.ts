/** `burrow netcheck`: what kind of NAT this host is behind, and which kinds of peer it reaches directly. */
import { endpointKey } from '../codec/address.js';
import type { LifetimeEstimate, NetcheckReport } from '../core/nat/netcheck.js';
import { netcheck } from '../node/netcheck.js';
import type { Io } from './common.js';
import { checkServerAddress } from './parse.js';
import type { Parsed } from './schema.js';

const MAPPING_TEXT: Record<NetcheckReport['mapping'], string> = {
  'no-nat': 'none (no NAT: the public address is this host\'s own)',
  'endpoint-independent': 'endpoint-independent (one public port for every destination)',
  'address-dependent': 'address-dependent (a new public port for every destination IP)',
  'address-and-port-dependent': 'address-and-port-dependent (a new public port for every destination: symmetric)',
  'endpoint-dependent': 'endpoint-dependent (a new public port per destination; one server IP cannot tell address from port)',
  unknown: 'unknown (the server offers neither a second address nor a second port)',
};

const FILTERING_TEXT: Record<NetcheckReport['filtering'], string> = {
  'endpoint-independent': 'endpoint-independent (anyone may answer an open mapping)',
  'address-dependent': 'address-dependent (only IPs this host has sent to)',
  'address-and-port-dependent': 'address-and-port-dependent (only the exact IP and port this host has sent to)',
  unknown: 'unknown (needs a server with a second IP: burrow serve --alt-address)',
};

function seconds(ms: number): string {
  return ms >= 60_000 ? `${ms / 60_000} min` : `${ms / 1000} s`;
}

function lifetimeText(l: LifetimeEstimate): string {
  if (l.kind === 'unsupported') return `not measured: ${l.reason}`;
  if (l.goneMs === undefined) return `at least ${seconds(l.aliveMs ?? 0)} (alive at every trial)`;
  if (l.aliveMs === undefined) return `less than ${seconds(l.goneMs)}`;
  return `between ${seconds(l.aliveMs)} and ${seconds(l.goneMs)}`;
}

export function formatReport(r: NetcheckReport): string {
  const lines = [
    `Report (server ${r.server}${r.otherAddress ? `, other address ${endpointKey(r.otherAddress)}` : ', one address: mapping tests only'}):`,
    `  UDP:          yes`,
    `  IPv4:         ${r.ipv4 ? endpointKey(r.ipv4) : 'none'} (local ${endpointKey(r.local)})`,
    `  IPv6:         ${r.ipv6 ? endpointKey(r.ipv6) : r.ipv6Tested ? 'no answer' : 'not tested (the server has no IPv6 address, or this host none)'}`,
    `  NAT:          ${r.nat}`,
    `  Mapping:      ${MAPPING_TEXT[r.mapping]}`,
    `  Allocation:   ${r.mapping === 'no-nat' ? 'n/a (no NAT)' : r.allocation}`,
    `  Filtering:    ${FILTERING_TEXT[r.filtering]}`,
    `  Hairpinning:  ${r.hairpinning === undefined ? 'not tested' : r.hairpinning ? 'yes' : 'no'}`,
    ...(r.lifetime ? [`  Lifetime:     ${lifetimeText(r.lifetime)}`] : []),
    `  RTT:          ${r.rttMs.toFixed(1)} ms`,
    `Verdict: ${r.verdict.line}`,
  ];
  return `${lines.join('\n')}\n`;
}

export async function netcheckCommand(parsed: Parsed<'netcheck'>, io: Io): Promise<number> {
  const { values } = parsed;
  checkServerAddress('the STUN server', values.server);
  if (values.lifetime && !io.quiet) io.stderr.write('burrow netcheck: estimating the binding lifetime takes up to 8 minutes\n');
  if (values.server6 !== undefined) checkServerAddress('the IPv6 STUN server', values.server6);
  const report = await netcheck({ server: values.server, ...(values.server6 !== undefined ? { server6: values.server6 } : {}), lifetime: values.lifetime, signal: io.signal });
  io.stdout.write(values.format === 'json' ? `${JSON.stringify(report)}\n` : formatReport(report));
  return 0;
}
