/**
 * `burrow lab`: runs a real punch across emulated NATs (network namespaces + nftables, root only) and
 * reports what each side printed, whether the handoff contract held, and how long it took. The lab is
 * torn down on every outcome, including Ctrl-C.
 */
import { isNatKind, NAT_KINDS, type NatKind } from '../lab/nat-rules.js';
import { runPunchScenario, type PeerResult, type PunchScenarioResult } from '../lab/scenario.js';
import { labAvailable } from '../lab/topology.js';
import { say, type Io } from './common.js';
import { usageError } from './parse.js';
import type { Parsed } from './schema.js';

function kind(flag: string, value: string | undefined): NatKind {
  if (value === undefined) throw usageError(`${flag} KIND is required`, `KIND is one of ${NAT_KINDS.join(', ')}`);
  if (!isNatKind(value)) throw usageError(`${flag} "${value}" is not a NAT kind`, `use one of ${NAT_KINDS.join(', ')}`);
  return value;
}

function describePeer(p: PeerResult): string {
  const status = p.exit.code === null ? `killed by ${p.exit.signal ?? 'a signal'}` : `exit ${p.exit.code}`;
  const handoff = p.handoff ? (p.handoff.ok ? ', handoff contract holds' : ', HANDOFF FAILED') : '';
  return `${p.name} in ${p.node}: ${status} after ${Math.round(p.wallMs)} ms${handoff}\n` +
    p.stderr.split('\n').filter((l) => l.length > 0).map((l) => `    ${l}`).join('\n') +
    (p.stdout.length > 0 ? `\n    stdout: ${p.stdout.trim()}` : '');
}

export function formatReport(r: PunchScenarioResult): string {
  const o = r.options;
  const peers = [r.peers.a, r.peers.b].filter((p): p is PeerResult => p !== null);
  return `lab ${r.runId}: ${o.a} ↔ ${o.sameNat === true ? `${o.a} (same NAT)` : o.b}: ${r.connected ? 'CONNECTED' : 'not connected'} ` +
    `(lab set-up ${Math.round(r.setupMs)} ms, both exited ${Math.round(r.allExitedMs)} ms after the first started)\n` +
    peers.map(describePeer).join('\n') + '\n';
}

export async function labPunchCommand(parsed: Parsed<'lab punch'>, io: Io): Promise<number> {
  const { values } = parsed;
  const a = kind('--a', values.a);
  const b = values['same-nat'] && values.b === undefined ? a : kind('--b', values.b);
  const available = labAvailable();
  if (!available.ok) throw usageError(`cannot build the NAT lab: ${available.reason}`, 'run it as root on Linux with iproute2, nftables and conntrack installed');
  const result = await runPunchScenario({
    a,
    b,
    sameNat: values['same-nat'],
    first: values.first,
    delayMs: values.delay,
    timeoutSeconds: values.timeout,
    lossPercent: values.loss,
    signal: io.signal,
  });
  io.stdout.write(formatReport(result));
  return result.connected ? 0 : 1;
}

/** The root-only half of `burrow demo`: one punch across two port-restricted NATs. */
export async function labDemo(io: Io, signal: AbortSignal): Promise<number> {
  const available = labAvailable();
  if (!available.ok) {
    say(io, `skipping the emulated-NAT demo: ${available.reason}.`);
    return 0;
  }
  say(io, 'demo 2: the same across two emulated port-restricted NATs (network namespaces + nftables)');
  const result = await runPunchScenario({ a: 'port-restricted', b: 'port-restricted', timeoutSeconds: 10, signal });
  io.stdout.write(formatReport(result));
  return result.connected ? 0 : 1;
}
