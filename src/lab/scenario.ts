/**
 * A real Burrow punch across the lab: the rendezvous server in pub, one peer behind each router (or both behind router
 * A), the built CLI as the user runs it, then the handoff contract checked from both hosts. Reports everything and
 * tears the lab down on every outcome.
 *
 * The CLI contract this runs against (issue 2, items 3 and 4):
 * - `node dist/src/cli/main.js serve --listen 203.0.113.1:3478 --secret-file F --log-format json` is ready once its
 *   stderr contains `"listening"`;
 * - `… punch --server 203.0.113.1:3478 --secret-file F --as NAME --to NAME --timeout T --format json [--local A:P]`
 *   exits 0 (connected, exactly one JSON object on stdout), 2 usage, 3 authentication failed, 4 peer never appeared,
 *   5 peer found but no path, 1 anything else.
 */

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { isIP, isIPv4, isIPv6 } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { LabError } from './errors.js';
import type { NatKind } from './nat-rules.js';
import type { HostNode } from './plan.js';
import type { LabProcess, ProcessExit } from './process.js';
import { createLab, type Lab } from './topology.js';

/** The repository root: this file is compiled to <root>/dist/src/lab/scenario.js. */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
/** The binary users run (package.json `bin`). */
export const DEFAULT_CLI = join(REPO_ROOT, 'dist', 'src', 'cli', 'burrow.cjs');
const HANDOFF_PROGRAM = fileURLToPath(new URL('./programs/handoff.js', import.meta.url));

export const SERVER_ENDPOINT = '203.0.113.1:3478';
const SERVER_READY_MS = 5_000;
/** A peer still running this long after its --timeout is killed (and reported as such). */
const PEER_GRACE_MS = 5_000;
const HANDOFF_TIMEOUT_MS = 3_000;

export type PeerSide = 'a' | 'b';

export interface PunchScenarioOptions {
  /** Router A's kind; peer a (alice) runs in hA behind it. */
  readonly a: NatKind;
  /** Router B's kind; peer b (bob) runs in hB behind it, unless `sameNat`. */
  readonly b: NatKind;
  /** Run peer b in hA2, on hA's LAN behind router A. Default false. */
  readonly sameNat?: boolean;
  /** Which peer starts first. Default 'a'. */
  readonly first?: PeerSide;
  /** Milliseconds between the first and the second peer's start. Default 0. */
  readonly delayMs?: number;
  /** The peers' `--timeout` in seconds. Default 5. */
  readonly timeoutSeconds?: number;
  /** Give this peer a secret that differs from the server's. */
  readonly wrongSecret?: PeerSide;
  /** Start only peer a. Default false. */
  readonly absentPeer?: boolean;
  /** `--local` per peer, e.g. `0.0.0.0:40000`. */
  readonly local?: { readonly a?: string; readonly b?: string };
  /** Loss in percent applied to both routers' forwarded traffic. Default 0. */
  readonly lossPercent?: number;
  /** Check the handoff contract after both peers connected. Default true. */
  readonly checkHandoff?: boolean;
  /** The CLI entry point. Default: the built one in this repository. */
  readonly cliPath?: string;
  /** Aborting kills the peers and tears the lab down. */
  readonly signal?: AbortSignal;
  /** More `burrow punch` flags for both peers (e.g. `--relay never`). */
  readonly peerArgs?: readonly string[];
}

/** What `burrow punch --format json` prints on success. */
export interface PunchOutput {
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  readonly path: 'lan' | 'direct';
  readonly elapsedMs: number;
}

export type ParsedPunchOutput = { readonly ok: true; readonly value: PunchOutput } | { readonly ok: false; readonly reason: string };

/** The handoff program's report. */
export type { HandoffReport } from './programs/handoff.js';
import type { HandoffReport } from './programs/handoff.js';

export interface HandoffResult {
  /** True when the program exited 0: a datagram from exactly the printed remote address arrived. */
  readonly ok: boolean;
  readonly exit: ProcessExit;
  readonly report: HandoffReport | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface PeerResult {
  readonly side: PeerSide;
  readonly name: 'alice' | 'bob';
  readonly node: HostNode;
  readonly exit: ProcessExit;
  /** The harness killed the peer because it outlived its --timeout by more than the grace period. */
  readonly killed: boolean;
  /** The parsed stdout when the peer exited 0. */
  readonly output: ParsedPunchOutput | null;
  readonly stdout: string;
  readonly stderr: string;
  /** Milliseconds from the scenario's start (the first peer's spawn) to this peer's spawn and exit. */
  readonly startedAtMs: number;
  readonly exitedAtMs: number;
  /** Spawn to exit. */
  readonly wallMs: number;
  readonly handoff: HandoffResult | null;
}

export interface PunchScenarioResult {
  readonly runId: string;
  readonly options: PunchScenarioOptions;
  readonly peers: { readonly a: PeerResult; readonly b: PeerResult | null };
  /** Both peers exited 0 with valid output, and the handoff held on both sides where checked. */
  readonly connected: boolean;
  /** From the first peer's spawn until every started peer has exited. */
  readonly allExitedMs: number;
  readonly serverStdout: string;
  readonly serverStderr: string;
  /** Lab bring-up plus server start. */
  readonly setupMs: number;
  /** From the call until the report was complete (teardown follows). */
  readonly durationMs: number;
}

function isPort(value: unknown, allowZero = false): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= (allowZero ? 0 : 1) && value <= 65535;
}

/** Checks that `stdout` is exactly one JSON object with the fields of `PunchOutput`. Pure. */
export function parsePunchOutput(stdout: string): ParsedPunchOutput {
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch {
    return { ok: false, reason: `stdout is not exactly one JSON object: ${JSON.stringify(stdout.slice(0, 200))}` };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return { ok: false, reason: 'stdout is JSON but not an object' };
  const o = value as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof o.localAddress !== 'string' || isIP(o.localAddress) === 0) problems.push('localAddress is not an IP address');
  if (!isPort(o.localPort)) problems.push('localPort is not a port');
  if (typeof o.remoteAddress !== 'string' || isIP(o.remoteAddress) === 0) problems.push('remoteAddress is not an IP address');
  if (!isPort(o.remotePort)) problems.push('remotePort is not a port');
  if (o.path !== 'lan' && o.path !== 'direct') problems.push('path is neither "lan" nor "direct"');
  if (typeof o.elapsedMs !== 'number' || !(o.elapsedMs >= 0)) problems.push('elapsedMs is not a non-negative number');
  if (problems.length > 0) return { ok: false, reason: `${problems.join('; ')}: ${stdout.trim()}` };
  return { ok: true, value: o as unknown as PunchOutput };
}

function parseHandoffReport(stdout: string): HandoffReport | null {
  try {
    const value: unknown = JSON.parse(stdout);
    return typeof value === 'object' && value !== null && typeof (value as { ok?: unknown }).ok === 'boolean' ? (value as HandoffReport) : null;
  } catch {
    return null;
  }
}

/** A random network secret: 32 bytes, base64url. */
function newSecret(): string {
  return randomBytes(32).toString('base64url');
}

/** Waits for `child` to exit, killing it (SIGKILL) after `limitMs`. Resolves with whether it had to be killed. */
async function exitWithin(child: LabProcess, limitMs: number): Promise<boolean> {
  let killed = false;
  const timer = setTimeout(() => {
    killed = true;
    child.kill('SIGKILL');
  }, limitMs);
  await child.exited;
  clearTimeout(timer);
  return killed;
}

/** Whether `address` is one of the lab's documentation addresses (RFC 5737, RFC 3849). */
export function isLabAddress(address: string): boolean {
  if (isIPv4(address)) return ['192.0.2.', '198.51.100.', '203.0.113.'].some((prefix) => address.startsWith(prefix));
  return isIPv6(address) && /^2001:0?db8:/i.test(address);
}

async function checkHandoff(lab: Lab, node: HostNode, output: PunchOutput): Promise<HandoffResult> {
  if (!isLabAddress(output.remoteAddress)) {
    // The namespaces have no route out of the lab anyway; still, never aim traffic at an address outside it.
    const stderr = `handoff not attempted: ${output.remoteAddress} is not a lab address\n`;
    return { ok: false, exit: { code: null, signal: null }, report: null, stdout: '', stderr };
  }
  const child = lab.spawn(node, process.execPath, [
    HANDOFF_PROGRAM,
    '--port', String(output.localPort),
    '--remote-address', output.remoteAddress,
    '--remote-port', String(output.remotePort),
    '--timeout-ms', String(HANDOFF_TIMEOUT_MS),
  ]);
  child.endInput();
  await exitWithin(child, HANDOFF_TIMEOUT_MS + PEER_GRACE_MS);
  const exit = child.exitStatus ?? { code: null, signal: null };
  return { ok: exit.code === 0, exit, report: parseHandoffReport(child.stdout), stdout: child.stdout, stderr: child.stderr };
}

interface PeerPlan {
  readonly side: PeerSide;
  readonly name: 'alice' | 'bob';
  readonly peerName: 'alice' | 'bob';
  readonly node: HostNode;
  readonly secretFile: string;
  readonly local: string | undefined;
  readonly extra: readonly string[];
}

interface RunningPeer {
  readonly plan: PeerPlan;
  readonly child: LabProcess;
  /** Resolves once the peer exited, with whether the harness had to kill it. */
  readonly killed: Promise<boolean>;
}

async function startServer(lab: Lab, cli: string, secretFile: string): Promise<LabProcess> {
  const server = lab.spawn('pub', process.execPath, [cli, 'serve', '--listen', SERVER_ENDPOINT, '--secret-file', secretFile, '--log-format', 'json']);
  server.endInput();
  try {
    await server.waitForOutput('stderr', '"listening"', SERVER_READY_MS);
  } catch (err) {
    throw new LabError('LAB_SERVER_FAILED', `burrow serve did not report "listening" on stderr: ${(err as Error).message}`, { cause: err });
  }
  return server;
}

function startPeer(lab: Lab, cli: string, plan: PeerPlan, timeoutSeconds: number): RunningPeer {
  const args = [cli, 'punch', '--server', SERVER_ENDPOINT, '--secret-file', plan.secretFile, '--as', plan.name, '--to', plan.peerName];
  args.push('--timeout', String(timeoutSeconds), '--format', 'json');
  if (plan.local !== undefined) args.push('--local', plan.local);
  args.push(...plan.extra);
  const child = lab.spawn(plan.node, process.execPath, args);
  child.endInput();
  return { plan, child, killed: exitWithin(child, timeoutSeconds * 1000 + PEER_GRACE_MS) };
}

async function finishPeer(peer: RunningPeer, t0: number): Promise<Omit<PeerResult, 'handoff'>> {
  const killed = await peer.killed;
  const { child, plan } = peer;
  const exit = child.exitStatus ?? { code: null, signal: null };
  const exitedAt = child.exitedAt ?? performance.now();
  return {
    side: plan.side,
    name: plan.name,
    node: plan.node,
    exit,
    killed,
    output: exit.code === 0 ? parsePunchOutput(child.stdout) : null,
    stdout: child.stdout,
    stderr: child.stderr,
    startedAtMs: child.startedAt - t0,
    exitedAtMs: exitedAt - t0,
    wallMs: exitedAt - child.startedAt,
  };
}

/** Runs one punch scenario in a fresh lab and reports; never leaves the lab behind. */
export async function runPunchScenario(options: PunchScenarioOptions): Promise<PunchScenarioResult> {
  const began = performance.now();
  const cli = options.cliPath ?? DEFAULT_CLI;
  if (!existsSync(cli)) {
    throw new LabError('LAB_CLI_MISSING', `the Burrow CLI is not built: ${cli} does not exist; run \`npm run build\` first`);
  }
  const timeoutSeconds = options.timeoutSeconds ?? 5;
  const dir = await mkdtemp(join(tmpdir(), 'burrow-lab-'));
  let lab: Lab | undefined;
  const peers: RunningPeer[] = [];
  const killPeers = (): void => {
    for (const peer of peers) peer.child.kill('SIGKILL');
  };
  options.signal?.addEventListener('abort', killPeers, { once: true });
  try {
    options.signal?.throwIfAborted();
    const secretFile = join(dir, 'secret');
    const wrongSecretFile = join(dir, 'wrong-secret');
    await writeFile(secretFile, `${newSecret()}\n`, { mode: 0o600 });
    await writeFile(wrongSecretFile, `${newSecret()}\n`, { mode: 0o600 });
    const secretOf = (side: PeerSide): string => (options.wrongSecret === side ? wrongSecretFile : secretFile);
    const plans: Record<PeerSide, PeerPlan> = {
      a: { side: 'a', name: 'alice', peerName: 'bob', node: 'hA', secretFile: secretOf('a'), local: options.local?.a, extra: options.peerArgs ?? [] },
      b: { side: 'b', name: 'bob', peerName: 'alice', node: options.sameNat === true ? 'hA2' : 'hB', secretFile: secretOf('b'), local: options.local?.b, extra: options.peerArgs ?? [] },
    };

    const active = await createLab({ a: options.a, b: options.b });
    lab = active;
    const loss = options.lossPercent ?? 0;
    if (loss > 0) await Promise.all([active.setLoss('natA', loss), active.setLoss('natB', loss)]);
    const server = await startServer(active, cli, secretFile);
    const setupMs = performance.now() - began;

    const order: PeerSide[] = options.absentPeer === true ? ['a'] : (options.first ?? 'a') === 'a' ? ['a', 'b'] : ['b', 'a'];
    for (const [index, side] of order.entries()) {
      const delayMs = options.delayMs ?? 0;
      if (index > 0 && delayMs > 0) await sleep(delayMs, undefined, options.signal === undefined ? {} : { signal: options.signal });
      peers.push(startPeer(active, cli, plans[side], timeoutSeconds));
    }
    const t0 = Math.min(...peers.map((peer) => peer.child.startedAt));
    const finished = await Promise.all(peers.map((peer) => finishPeer(peer, t0)));
    options.signal?.throwIfAborted();
    const a = finished.find((peer) => peer.side === 'a');
    const b = finished.find((peer) => peer.side === 'b') ?? null;
    if (a === undefined) throw new Error('unreachable: peer a always runs');

    let handoffA: HandoffResult | null = null;
    let handoffB: HandoffResult | null = null;
    if (options.checkHandoff !== false && b !== null && a.output?.ok === true && b.output?.ok === true) {
      [handoffA, handoffB] = await Promise.all([checkHandoff(active, a.node, a.output.value), checkHandoff(active, b.node, b.output.value)]);
    }
    const handoffHeld = options.checkHandoff === false || (handoffA?.ok === true && handoffB?.ok === true);

    server.kill('SIGTERM');
    await exitWithin(server, 2_000);
    return {
      runId: active.runId,
      options,
      peers: { a: { ...a, handoff: handoffA }, b: b === null ? null : { ...b, handoff: handoffB } },
      connected: a.output?.ok === true && b?.output?.ok === true && handoffHeld,
      allExitedMs: Math.max(...finished.map((peer) => peer.exitedAtMs)),
      serverStdout: server.stdout,
      serverStderr: server.stderr,
      setupMs,
      durationMs: performance.now() - began,
    };
  } finally {
    options.signal?.removeEventListener('abort', killPeers);
    await lab?.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}
