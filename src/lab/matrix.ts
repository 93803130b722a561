/**
 * The NAT matrix (issue 11 item 5, issue 10 "Every pair connects"): every ordered pair of NAT kinds, each side starting
 * first, through a chosen relay, with the built CLI as users run it. Each run is `burrow punch ... -- COMMAND` on both
 * peers, where COMMAND (programs/handoff.ts) exchanges datagrams both ways through its own socket bound to
 * $BURROW_LOCAL_PORT; a run counts as connected only when both punches exit 0 and both programs heard each other.
 *
 * A cell is (first starter's kind, second starter's kind). Every run of a cell is done twice, once with the first
 * starter behind router A and once behind router B, so that both positions of the lab count. Runs that share the lab's
 * two kinds share one lab: before every run both routers forget their NAT state (conntrack and the learnt cone
 * mappings) and the peers get new names, so no run inherits a mapping, a registration or a relay session from another.
 * The rendezvous server is started afresh per relay mode and run index (the lab's two runs that differ only in which
 * side starts first share one); coturn runs once per lab.
 *
 * Relays:
 * - `builtin`: `burrow serve` relays (its default); what it relayed is read from its metrics.
 * - `coturn`: `burrow serve --turn turn:203.0.113.9:3478 --turn-secret-file F` with coturn's `turnserver
 *   --use-auth-secret` beside it in pub; what it relayed is counted by an nftables counter on its relayed ports.
 * - `none`: the peers run with `--relay never` (direct paths only).
 * - `no-relay`: `burrow serve --no-relay`.
 * - `coturn-stopped`: `burrow serve --turn` naming a coturn that is not running.
 */

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { LabError } from './errors.js';
import { NAT_KINDS, type NatKind } from './nat-rules.js';
import type { HostNode } from './plan.js';
import type { LabProcess } from './process.js';
import { DEFAULT_CLI, SERVER_ENDPOINT } from './scenario.js';
import { createLab, type Lab } from './topology.js';

const HANDOFF_PROGRAM = fileURLToPath(new URL('./programs/handoff.js', import.meta.url));

export const MATRIX_RELAYS = ['builtin', 'coturn', 'none', 'no-relay', 'coturn-stopped'] as const;
export type MatrixRelay = (typeof MATRIX_RELAYS)[number];

export function isMatrixRelay(value: string): value is MatrixRelay {
  return (MATRIX_RELAYS as readonly string[]).includes(value);
}

/** Whether a relay is meant to be reachable in this mode (otherwise pairs without a direct path must exit 5). */
export function relayAvailable(relay: MatrixRelay): boolean {
  return relay === 'builtin' || relay === 'coturn';
}

/** What a run (or a cell) ended with. `birthday`: a direct path that birthday probing found. */
export type MatrixPath = 'lan' | 'direct' | 'birthday' | 'relay' | 'failed';
export const MATRIX_PATHS: readonly MatrixPath[] = ['lan', 'direct', 'birthday', 'relay', 'failed'];

/** coturn's address in pub, beside the rendezvous server's. */
export const TURN_ADDRESS = '203.0.113.9';
const TURN_PORT = 3478;
const TURN_RELAY_PORTS = [49152, 49651] as const;
const METRICS_PORT = 9464;
const SERVER_READY_MS = 10_000;
/** What COMMAND is given to hear the other side (it ends as soon as both have heard each other). */
const HANDOFF_TIMEOUT_MS = 5_000;
/** A peer still running this long after its --timeout plus COMMAND's time is killed, and the run fails. */
const PEER_GRACE_MS = 5_000;
/** Between the two peers' starts. */
const DEFAULT_DELAY_MS = 200;
const COUNTER_TABLE = 'burrow_matrix';

export interface MatrixOptions {
  /** The kinds whose every ordered pair is a cell. Default: all five. */
  readonly kinds?: readonly NatKind[];
  /** Only these cells, as [first starter's kind, second starter's kind]; default every ordered pair of `kinds`. */
  readonly cells?: readonly (readonly [NatKind, NatKind])[];
  /** Only these positions of the first starter (behind router A, behind router B). Default both. */
  readonly positions?: readonly ('a' | 'b')[];
  /** The relay modes; each gets its own grid. Default ['builtin']. */
  readonly relays?: readonly MatrixRelay[];
  /** Runs per cell and position. Default 1. */
  readonly runs?: number;
  /** Each peer's --timeout in seconds. Default 8 where a relay is available, 5 where none is (the exit-5 diagnosis needs 3 s together). */
  readonly timeoutSeconds?: number;
  /** Milliseconds between the two peers' starts. Default 200. */
  readonly delayMs?: number;
  /**
   * On a relayed path, COMMAND keeps its socket this long after the exchange, so that Burrow, which proxies while
   * COMMAND runs, can move to a direct path (birthday probing); the run's path is where both ended. Default 0.
   */
  readonly upgradeWaitMs?: number;
  /** The CLI entry point. Default: the built one in this repository. */
  readonly cliPath?: string;
  /** More `burrow punch` flags for both peers of every run. */
  readonly peerArgs?: readonly string[];
  readonly signal?: AbortSignal;
  /** Called after each run, for progress. */
  readonly onRun?: (run: MatrixRun) => void;
}

export interface MatrixPeer {
  readonly name: string;
  readonly kind: NatKind;
  readonly node: HostNode;
  readonly exitCode: number | null;
  readonly signal: string | null;
  /** The punch result (the first line of stdout) when it exited 0. */
  readonly path: 'lan' | 'direct' | 'relay' | null;
  /** The path after the last move ({"event":"path"} line) while Burrow proxied; `path` without one. */
  readonly finalPath: 'lan' | 'direct' | 'relay' | null;
  /** The punch's own elapsedMs (from its start to connected). */
  readonly elapsedMs: number | null;
  /** The `birthday` object of the punch result or of the move to a direct path, when birthday probing found it. */
  readonly birthday: { readonly role: string; readonly probes: number } | null;
  /** Later path moves ({"event":"path"} lines) while Burrow proxied. */
  readonly moves: readonly string[];
  /** On a relayed path: the relay server of this side's allocation, or (relaying through the partner's) its upstream. */
  readonly relayServer: string | null;
  /** COMMAND heard the other side, and the other side said it heard us. */
  readonly exchanged: boolean;
  /** Milliseconds from this peer's spawn to its first line on stdout (the result), on the harness's clock. */
  readonly resultAfterMs: number | null;
  /** The error code and message on failure (the JSON error on stdout, else the end of stderr). */
  readonly error: string | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface MatrixRun {
  readonly relay: MatrixRelay;
  readonly first: NatKind;
  readonly second: NatKind;
  /** The router the first starter is behind. */
  readonly position: 'a' | 'b';
  readonly index: number;
  readonly runId: string;
  readonly path: MatrixPath;
  /** The path both peers first printed; `relay` where `path` is a later move to direct (an upgrade). */
  readonly initialPath: MatrixPath;
  /** Both peers connected and exchanged datagrams. */
  readonly connected: boolean;
  /**
   * From the second peer's spawn until both had printed their result, on the harness's clock (so it includes the
   * second process's start-up), or null if a side did not connect.
   */
  readonly connectMs: number | null;
  /** The birthday probes the easy side sent, when birthday probing found the path; else null. */
  readonly probes: number | null;
  /** The sockets the hard side opened for it; else null. */
  readonly sockets: number | null;
  /**
   * Datagrams the relay carried during the run (the built-in relay's metrics, or coturn's relayed ports), or null when
   * there is no relay to count. On a direct path these are connectivity checks sent through the relay before the
   * direct pair was chosen (checks run on every pair from time zero).
   */
  readonly relayDatagrams: number | null;
  /** Of those, the datagrams counted after both peers had printed their result, i.e. while COMMAND ran. */
  readonly relayDatagramsAfterResult: number | null;
  readonly peers: { readonly first: MatrixPeer; readonly second: MatrixPeer };
  /** A failure that came from the harness rather than the punch (lab, server or coturn did not start). */
  readonly harnessError: string | null;
}

export interface MatrixCell {
  readonly relay: MatrixRelay;
  readonly first: NatKind;
  readonly second: NatKind;
  /** The path most runs took; `failed` if most failed. */
  readonly path: MatrixPath;
  readonly runs: number;
  /** Runs that took `path`. */
  readonly agreeing: number;
  readonly connected: number;
  /** Runs that started relayed and moved to a direct path while COMMAND ran. */
  readonly upgraded: number;
  readonly medianConnectMs: number | null;
  /** Medians over the runs birthday probing connected: the easy side's probes, the hard side's sockets. */
  readonly medianProbes: number | null;
  readonly medianSockets: number | null;
  /** The largest relayDatagrams among runs whose path was direct, lan or birthday. */
  readonly relayedOnDirect: number | null;
  /** The largest relayDatagramsAfterResult among those runs: what the relay carried while COMMAND used the direct path (should be 0). */
  readonly relayedOnDirectAfterResult: number | null;
}

export interface MatrixResult {
  readonly kinds: readonly NatKind[];
  readonly relays: readonly MatrixRelay[];
  readonly runsPerCell: number;
  readonly startedAt: string;
  readonly durationMs: number;
  readonly runs: readonly MatrixRun[];
  readonly cells: readonly MatrixCell[];
}

export function median(values: readonly number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((x, y) => x - y);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] ?? null) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

/** Sums the runs of each cell up. Pure. */
export function summarizeCells(runs: readonly MatrixRun[], relays: readonly MatrixRelay[], cells: readonly (readonly [NatKind, NatKind])[]): MatrixCell[] {
  const out: MatrixCell[] = [];
  for (const relay of relays) {
    for (const [first, second] of cells) {
      const mine = runs.filter((r) => r.relay === relay && r.first === first && r.second === second);
      if (mine.length === 0) continue;
      const counts = new Map<MatrixPath, number>();
      for (const r of mine) counts.set(r.path, (counts.get(r.path) ?? 0) + 1);
      // The most common path; a tie goes to the worse one (the later in MATRIX_PATHS), so a cell never looks better than it is.
      let path: MatrixPath = 'failed';
      let agreeing = -1;
      for (const p of MATRIX_PATHS) {
        const n = counts.get(p) ?? 0;
        if (n > 0 && n >= agreeing) {
          path = p;
          agreeing = n;
        }
      }
      const good = mine.filter((r) => r.connected);
      // Runs that were direct from the start: the relay should have carried nothing for them once connected.
      const direct = mine.filter((r) => r.initialPath !== 'relay' && r.connected && r.relayDatagrams !== null);
      out.push({
        relay,
        first,
        second,
        path,
        runs: mine.length,
        agreeing,
        connected: good.length,
        upgraded: mine.filter((r) => r.connected && r.initialPath === 'relay' && r.path !== 'relay').length,
        medianConnectMs: median(good.flatMap((r) => (r.connectMs === null ? [] : [r.connectMs]))),
        medianProbes: median(mine.flatMap((r) => (r.probes === null ? [] : [r.probes]))),
        medianSockets: median(mine.flatMap((r) => (r.sockets === null ? [] : [r.sockets]))),
        relayedOnDirect: direct.length === 0 ? null : Math.max(...direct.map((r) => r.relayDatagrams ?? 0)),
        relayedOnDirectAfterResult: direct.length === 0 ? null : Math.max(...direct.map((r) => r.relayDatagramsAfterResult ?? 0)),
      });
    }
  }
  return out;
}

function cellsOf(options: MatrixOptions, kinds: readonly NatKind[]): (readonly [NatKind, NatKind])[] {
  if (options.cells !== undefined) return [...options.cells];
  return kinds.flatMap((first) => kinds.map((second) => [first, second] as const));
}

// ---------------------------------------------------------------------------------------------------------------------
// Parsing what the peers printed.

interface ParsedPeerOutput {
  readonly path: 'lan' | 'direct' | 'relay' | null;
  readonly finalPath: 'lan' | 'direct' | 'relay' | null;
  readonly elapsedMs: number | null;
  readonly birthday: { readonly role: string; readonly probes: number } | null;
  readonly moves: string[];
  readonly relayServer: string | null;
  readonly exchanged: boolean;
  readonly error: string | null;
}

function objects(stdout: string): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const line of stdout.split('\n')) {
    if (line.trim() === '') continue;
    try {
      const value: unknown = JSON.parse(line);
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) out.push(value as Record<string, unknown>);
    } catch {
      // not a JSON line: ignored
    }
  }
  return out;
}

/** Reads a peer's stdout: the punch result first, path events, COMMAND's report last (or the JSON error). Pure. */
export function parsePeerOutput(stdout: string): ParsedPeerOutput {
  const lines = objects(stdout);
  const result = lines[0];
  const failure = lines.find((l) => typeof l.error === 'object' && l.error !== null)?.error as { code?: unknown; message?: unknown } | undefined;
  const error = failure === undefined ? null : `${String(failure.code)}: ${String(failure.message)}`;
  const pathOf = (v: unknown): 'lan' | 'direct' | 'relay' | null => (v === 'lan' || v === 'direct' || v === 'relay' ? v : null);
  const path = result !== undefined && result.event === undefined ? pathOf(result.path) : null;
  const elapsedMs = result !== undefined && typeof result.elapsedMs === 'number' ? result.elapsedMs : null;
  const events = lines.filter((l) => l.event === 'path');
  const moves = events.map((l) => String(l.path));
  const lastMove = events.at(-1);
  const finalPath = path === null ? null : lastMove === undefined ? path : pathOf(lastMove.path);
  // Birthday probing found the final direct path: said by the result, or by the move to it.
  const b: unknown = finalPath === 'relay' ? undefined : ((lastMove ?? result)?.birthday ?? result?.birthday);
  const birthday = typeof b === 'object' && b !== null ? { role: String((b as { role?: unknown }).role), probes: Number((b as { probes?: unknown }).probes ?? 0) } : null;
  const relay: unknown = result?.relay;
  const relayServer = typeof relay === 'object' && relay !== null ? String((relay as { server?: unknown }).server) : typeof result?.upstream === 'string' ? result.upstream : null;
  const report = lines.at(-1);
  const exchanged = lines.length >= 2 && report !== undefined && report.ok === true && report.heard === true && report.peerHeard === true;
  return { path, finalPath, elapsedMs, birthday, moves, relayServer, exchanged, error };
}

/**
 * The path a run took, from both peers' outputs: where they ended (`final`, the default: after any move while Burrow
 * proxied) or where they started (`initial`). Pure.
 */
export function runPath(
  first: Pick<MatrixPeer, 'path' | 'finalPath' | 'birthday' | 'exchanged' | 'exitCode'>,
  second: Pick<MatrixPeer, 'path' | 'finalPath' | 'birthday' | 'exchanged' | 'exitCode'>,
  which: 'final' | 'initial' = 'final',
): MatrixPath {
  if (first.exitCode !== 0 || second.exitCode !== 0 || !first.exchanged || !second.exchanged) return 'failed';
  const [a, b] = which === 'final' ? [first.finalPath, second.finalPath] : [first.path, second.path];
  if (a === null || b === null) return 'failed';
  if (a === 'relay' || b === 'relay') return 'relay';
  if (which === 'initial') return a === 'lan' && b === 'lan' ? 'lan' : 'direct';
  if (first.birthday !== null || second.birthday !== null) return 'birthday';
  return a === 'lan' && b === 'lan' ? 'lan' : 'direct';
}

// ---------------------------------------------------------------------------------------------------------------------
// Running.

interface Files {
  readonly dir: string;
  readonly secretFile: string;
  readonly turnSecretFile: string;
}

async function exitWithin(child: LabProcess, limitMs: number): Promise<void> {
  const timer = setTimeout(() => {
    child.kill('SIGKILL');
  }, limitMs);
  await child.exited;
  clearTimeout(timer);
}

async function stop(child: LabProcess): Promise<void> {
  child.kill('SIGTERM');
  await exitWithin(child, 3_000);
}

function serveArgs(cli: string, relay: MatrixRelay, files: Files): string[] {
  const args = [cli, 'serve', '--listen', SERVER_ENDPOINT, '--secret-file', files.secretFile, '--log-format', 'json'];
  args.push('--metrics', `127.0.0.1:${METRICS_PORT}`);
  if (relay === 'coturn' || relay === 'coturn-stopped') args.push('--turn', `turn:${TURN_ADDRESS}:${TURN_PORT}`, '--turn-secret-file', files.turnSecretFile);
  if (relay === 'no-relay') args.push('--no-relay');
  return args;
}

async function startServe(lab: Lab, cli: string, relay: MatrixRelay, files: Files): Promise<LabProcess> {
  const serve = lab.spawn('pub', process.execPath, serveArgs(cli, relay, files));
  serve.endInput();
  try {
    await serve.waitForOutput('stderr', '"listening"', SERVER_READY_MS);
  } catch (err) {
    serve.kill('SIGKILL');
    throw new LabError('LAB_SERVER_FAILED', `burrow serve did not report "listening" on stderr: ${(err as Error).message}`, { cause: err });
  }
  return serve;
}

/** coturn in pub on TURN_ADDRESS, with TURN REST credentials (the secret `burrow serve --turn-secret-file` reads). */
async function startCoturn(lab: Lab, turnSecret: string): Promise<LabProcess> {
  const [low, high] = TURN_RELAY_PORTS;
  const turn = lab.spawn('pub', 'turnserver', [
    '-n', '-L', TURN_ADDRESS, '-E', TURN_ADDRESS, '-p', String(TURN_PORT), '--min-port', String(low), '--max-port', String(high),
    '-r', 'burrow.test', '--use-auth-secret', '--static-auth-secret', turnSecret, '-f', '--no-tls', '--no-dtls', '--no-tcp-relay',
    '--no-cli', '--no-multicast-peers', '--log-file', 'stdout', '--simple-log',
  ]);
  turn.endInput();
  for (let i = 0; i < 100; i++) {
    const ss = await lab.exec('pub', 'ss', ['-Hlun', `sport = :${TURN_PORT}`]);
    if (ss.stdout.includes(`${TURN_ADDRESS}:${TURN_PORT}`)) return turn;
    if (turn.exitStatus !== null) break;
    await sleep(50);
  }
  turn.kill('SIGKILL');
  throw new LabError('LAB_COMMAND_FAILED', `turnserver did not listen on ${TURN_ADDRESS}:${TURN_PORT}: ${turn.stdout.slice(-1500)}${turn.stderr.slice(-500)}`);
}

/** An nftables counter in pub of the datagrams that enter or leave coturn's relayed ports. */
function counterRuleset(): string {
  const [low, high] = TURN_RELAY_PORTS;
  return `table inet ${COUNTER_TABLE}
delete table inet ${COUNTER_TABLE}
table inet ${COUNTER_TABLE} {
  counter relayed { }
  chain input {
    type filter hook input priority filter - 20; policy accept;
    ip daddr ${TURN_ADDRESS} udp dport ${low}-${high} counter name relayed
  }
  chain output {
    type filter hook output priority filter - 20; policy accept;
    ip saddr ${TURN_ADDRESS} udp sport ${low}-${high} counter name relayed
  }
}
`;
}

async function execChecked(lab: Lab, what: string, cmd: string, args: readonly string[], input?: string): Promise<string> {
  const result = await lab.exec('pub', cmd, args, input === undefined ? {} : { input });
  if (result.code !== 0) throw new LabError('LAB_COMMAND_FAILED', `${what}: ${cmd} ${args.join(' ')}: ${result.stderr.trim()}`);
  return result.stdout;
}

async function coturnDatagrams(lab: Lab): Promise<number> {
  const text = await execChecked(lab, 'reading the relayed-port counter', 'nft', ['list', 'counter', 'inet', COUNTER_TABLE, 'relayed']);
  const match = /packets (\d+)/.exec(text);
  if (match === null) throw new LabError('LAB_COMMAND_FAILED', `unexpected nft output: ${text}`);
  return Number(match[1]);
}

/**
 * Reads the built-in relay's count of relayed datagrams from serve's metrics, through one long-lived process in pub
 * (a Node start per reading would take longer than a whole exchange through the relay): each line on its stdin asks
 * for one reading, answered by one line on its stdout.
 */
const SCRAPER = `process.stdin.setEncoding('utf8').on('data', (d) => { for (const _ of d.split('\\n').slice(1)) {
  fetch('http://127.0.0.1:${METRICS_PORT}/metrics').then((r) => r.text()).then((t) => { const m = /^burrow_relay_datagrams_total (\\d+)/m.exec(t);
  process.stdout.write((m ? m[1] : 'missing') + '\\n'); }, (e) => process.stdout.write('error ' + String(e).replace(/\\n/g, ' ') + '\\n')); } });`;

class MetricsReader {
  readonly #child: LabProcess;
  #asked = 0;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(lab: Lab) {
    this.#child = lab.spawn('pub', process.execPath, ['-e', SCRAPER]);
  }

  read(): Promise<number> {
    const next = this.#queue.then(async () => {
      const wanted = ++this.#asked;
      this.#child.write('\n');
      const text = await this.#child.waitForOutput('stdout', (t) => t.split('\n').length > wanted, 5_000);
      const line = text.split('\n')[wanted - 1] ?? '';
      if (!/^\d+$/.test(line)) throw new LabError('LAB_COMMAND_FAILED', `reading serve's metrics: ${line}`);
      return Number(line);
    });
    this.#queue = next.catch(() => undefined);
    return next;
  }

  async close(): Promise<void> {
    this.#child.endInput();
    await exitWithin(this.#child, 2_000);
  }
}

function relayCount(lab: Lab, relay: MatrixRelay, metrics: MetricsReader | undefined): Promise<number> | null {
  if (relay === 'builtin' && metrics !== undefined) return metrics.read();
  if (relay === 'coturn') return coturnDatagrams(lab);
  return null;
}

interface RunSpec {
  readonly relay: MatrixRelay;
  readonly first: NatKind;
  readonly second: NatKind;
  readonly position: 'a' | 'b';
  readonly index: number;
}

interface Started {
  readonly child: LabProcess;
  readonly name: string;
  readonly kind: NatKind;
  readonly node: HostNode;
  /** Harness time of the first stdout line, or null. */
  readonly resultAt: Promise<number | null>;
}

function handoffCommand(upgradeWaitMs: number): string[] {
  return [
    '--', process.execPath, HANDOFF_PROGRAM, '--port', '$BURROW_LOCAL_PORT', '--remote-address', '$BURROW_REMOTE_ADDRESS',
    '--remote-port', '$BURROW_REMOTE_PORT', '--timeout-ms', String(HANDOFF_TIMEOUT_MS),
    ...(upgradeWaitMs > 0 ? ['--hold-ms', String(upgradeWaitMs), '--path', '$BURROW_PATH', '--hold-path', 'relay'] : []),
  ];
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join('\n');
}

function peerResult(s: Started, resultAt: number | null): MatrixPeer {
  const exit = s.child.exitStatus ?? { code: null, signal: null };
  const parsed = parsePeerOutput(s.child.stdout);
  return {
    name: s.name,
    kind: s.kind,
    node: s.node,
    exitCode: exit.code,
    signal: exit.signal,
    path: exit.code === 0 ? parsed.path : null,
    finalPath: exit.code === 0 ? parsed.finalPath : null,
    elapsedMs: parsed.elapsedMs,
    birthday: parsed.birthday,
    moves: parsed.moves,
    relayServer: parsed.relayServer,
    exchanged: parsed.exchanged,
    resultAfterMs: resultAt === null ? null : resultAt - s.child.startedAt,
    error: exit.code === 0 && parsed.exchanged ? null : (parsed.error ?? (lastLines(s.child.stderr, 3) || `exit ${String(exit.code ?? exit.signal)}`)),
    stdout: s.child.stdout,
    stderr: s.child.stderr,
  };
}

/** One run in a lab whose server (and coturn) already run. */
interface RunSettings {
  readonly timeoutSeconds: number;
  readonly delayMs: number;
  readonly upgradeWaitMs: number;
  readonly peerArgs: readonly string[];
}

async function runOnce(lab: Lab, cli: string, spec: RunSpec, files: Files, settings: RunSettings, metrics: MetricsReader | undefined, signal?: AbortSignal): Promise<MatrixRun> {
  const { timeoutSeconds, delayMs, upgradeWaitMs } = settings;
  await Promise.all([lab.flushConntrack('natA'), lab.flushConntrack('natB')]);
  const tag = randomBytes(3).toString('hex');
  // The first starter is behind router A (hA) in position 'a', behind router B (hB) in position 'b'.
  const firstNode: HostNode = spec.position === 'a' ? 'hA' : 'hB';
  const secondNode: HostNode = spec.position === 'a' ? 'hB' : 'hA';
  const firstName = `first-${tag}`;
  const secondName = `second-${tag}`;
  const before = await relayCount(lab, spec.relay, metrics);
  const limitMs = timeoutSeconds * 1000 + HANDOFF_TIMEOUT_MS + upgradeWaitMs + PEER_GRACE_MS;
  const start = (name: string, peer: string, kind: NatKind, node: HostNode): Started => {
    const args = [cli, 'punch', '--server', SERVER_ENDPOINT, '--secret-file', files.secretFile, '--as', name, '--to', peer];
    args.push('--timeout', String(timeoutSeconds), '--format', 'json');
    if (spec.relay === 'none') args.push('--relay', 'never');
    args.push(...settings.peerArgs);
    args.push(...handoffCommand(upgradeWaitMs));
    const child = lab.spawn(node, process.execPath, args);
    child.endInput();
    const resultAt = child.waitForOutput('stdout', '\n', limitMs).then(() => performance.now(), () => null);
    return { child, name, kind, node, resultAt };
  };
  const killAll = (): void => {
    for (const s of started) s.child.kill('SIGKILL');
  };
  const started: Started[] = [];
  let atResult: number | null = null;
  signal?.addEventListener('abort', killAll, { once: true });
  try {
    started.push(start(firstName, secondName, spec.first, firstNode));
    await sleep(delayMs, undefined, signal === undefined ? {} : { signal });
    started.push(start(secondName, firstName, spec.second, secondNode));
    // The relay's count once both have printed their result: what it carries from then on is COMMAND's traffic.
    const middle = Promise.all(started.map((s) => s.resultAt)).then(() => relayCount(lab, spec.relay, metrics));
    await Promise.all(started.map((s) => exitWithin(s.child, limitMs)));
    atResult = await middle.catch(() => null);
    signal?.throwIfAborted();
  } finally {
    signal?.removeEventListener('abort', killAll);
  }
  const [f, s] = started as [Started, Started];
  const [fAt, sAt] = await Promise.all([f.resultAt, s.resultAt]);
  const first = peerResult(f, fAt);
  const second = peerResult(s, sAt);
  const after = await relayCount(lab, spec.relay, metrics);
  const path = runPath(first, second);
  const connected = path !== 'failed';
  const roles = [first.birthday, second.birthday];
  return {
    ...spec,
    runId: lab.runId,
    path,
    initialPath: runPath(first, second, 'initial'),
    connected,
    connectMs: connected && fAt !== null && sAt !== null ? Math.max(fAt, sAt) - s.child.startedAt : null,
    probes: roles.find((b) => b?.role === 'easy')?.probes ?? null,
    sockets: roles.find((b) => b?.role === 'hard')?.probes ?? null,
    relayDatagrams: before === null || after === null ? null : after - before,
    relayDatagramsAfterResult: connected && atResult !== null && after !== null ? after - atResult : null,
    peers: { first, second },
    harnessError: null,
  };
}

function failedPeer(name: string, kind: NatKind, node: HostNode, error: string): MatrixPeer {
  return { name, kind, node, exitCode: null, signal: null, path: null, elapsedMs: null, finalPath: null, birthday: null, moves: [], relayServer: null, exchanged: false, resultAfterMs: null, error, stdout: '', stderr: '' };
}

function harnessFailure(spec: RunSpec, runId: string, err: unknown): MatrixRun {
  const message = err instanceof Error ? err.message : String(err);
  const [firstNode, secondNode]: HostNode[] = spec.position === 'a' ? ['hA', 'hB'] : ['hB', 'hA'];
  return {
    ...spec,
    runId,
    path: 'failed',
    initialPath: 'failed',
    connected: false,
    connectMs: null,
    probes: null,
    sockets: null,
    relayDatagrams: null,
    relayDatagramsAfterResult: null,
    peers: { first: failedPeer('first', spec.first, firstNode ?? 'hA', message), second: failedPeer('second', spec.second, secondNode ?? 'hB', message) },
    harnessError: message,
  };
}

/** The runs one lab (router A's kind, router B's kind) hosts, grouped by relay. */
function labRuns(a: NatKind, b: NatKind, cells: readonly (readonly [NatKind, NatKind])[], positions: readonly ('a' | 'b')[], relays: readonly MatrixRelay[], runs: number): RunSpec[] {
  const specs: RunSpec[] = [];
  for (const relay of relays) {
    for (let index = 0; index < runs; index++) {
      for (const [first, second] of cells) {
        if (positions.includes('a') && first === a && second === b) specs.push({ relay, first, second, position: 'a', index });
        if (positions.includes('b') && first === b && second === a) specs.push({ relay, first, second, position: 'b', index });
      }
    }
  }
  return specs;
}

/** Runs every run of one lab: a fresh rendezvous server per relay mode and run index, coturn once. */
async function runLab(a: NatKind, b: NatKind, specs: readonly RunSpec[], files: Files, turnSecret: string, options: MatrixOptions, cli: string, out: MatrixRun[]): Promise<void> {
  let lab: Lab | undefined;
  let labError: unknown;
  try {
    lab = await createLab({ a, b });
  } catch (err) {
    labError = err;
  }
  try {
    const needsTurnAddress = specs.some((s) => s.relay === 'coturn' || s.relay === 'coturn-stopped');
    let turn: LabProcess | undefined;
    let turnError: unknown;
    if (lab !== undefined && needsTurnAddress) {
      try {
        await execChecked(lab, 'adding coturn\'s address', 'ip', ['addr', 'add', `${TURN_ADDRESS}/32`, 'dev', 'lo']);
        await execChecked(lab, 'adding the relayed-port counter', 'nft', ['-f', '-'], counterRuleset());
        if (specs.some((s) => s.relay === 'coturn')) turn = await startCoturn(lab, turnSecret);
      } catch (err) {
        turnError = err;
      }
    }
    const groups = new Map<string, RunSpec[]>();
    for (const spec of specs) {
      const key = `${spec.relay}/${spec.index}`;
      groups.set(key, [...(groups.get(key) ?? []), spec]);
    }
    for (const group of groups.values()) {
      options.signal?.throwIfAborted();
      const relay = group[0]?.relay ?? 'builtin';
      const timeoutSeconds = options.timeoutSeconds ?? (relayAvailable(relay) ? 8 : 5);
      let serve: LabProcess | undefined;
      let metrics: MetricsReader | undefined;
      let setupError: unknown = labError ?? (relay === 'coturn' || relay === 'coturn-stopped' ? turnError : undefined);
      if (lab !== undefined && setupError === undefined) {
        try {
          serve = await startServe(lab, cli, relay, files);
          if (relay === 'builtin') metrics = new MetricsReader(lab);
        } catch (err) {
          setupError = err;
        }
      }
      for (const spec of group) {
        let run: MatrixRun;
        if (lab === undefined || serve === undefined) {
          run = harnessFailure(spec, lab?.runId ?? '-', setupError);
        } else {
          try {
            run = await runOnce(lab, cli, spec, files, { timeoutSeconds, delayMs: options.delayMs ?? DEFAULT_DELAY_MS, upgradeWaitMs: options.upgradeWaitMs ?? 0, peerArgs: options.peerArgs ?? [] }, metrics, options.signal);
          } catch (err) {
            options.signal?.throwIfAborted();
            run = harnessFailure(spec, lab.runId, err);
          }
        }
        out.push(run);
        options.onRun?.(run);
      }
      await metrics?.close();
      if (serve !== undefined) await stop(serve);
    }
    if (turn !== undefined) await stop(turn);
  } finally {
    await lab?.destroy();
  }
}

/** Runs the matrix and sums it up; every lab is torn down on every outcome. */
export async function runMatrix(options: MatrixOptions = {}): Promise<MatrixResult> {
  const began = performance.now();
  const startedAt = new Date().toISOString();
  const cli = options.cliPath ?? DEFAULT_CLI;
  if (!existsSync(cli)) throw new LabError('LAB_CLI_MISSING', `the Burrow CLI is not built: ${cli} does not exist; run \`npm run build\` first`);
  const kinds = options.kinds ?? NAT_KINDS;
  const relays = options.relays ?? ['builtin'];
  const runs = options.runs ?? 1;
  if (!Number.isInteger(runs) || runs < 1) throw new RangeError(`runs must be a whole number ≥ 1, not ${String(runs)}`);
  const cells = cellsOf(options, kinds);
  const positions = options.positions ?? ['a', 'b'];
  const dir = await mkdtemp(join(tmpdir(), 'burrow-matrix-'));
  const out: MatrixRun[] = [];
  try {
    const turnSecret = randomBytes(16).toString('hex');
    const files: Files = { dir, secretFile: join(dir, 'secret'), turnSecretFile: join(dir, 'turn-secret') };
    await writeFile(files.secretFile, `${randomBytes(32).toString('base64url')}\n`, { mode: 0o600 });
    await writeFile(files.turnSecretFile, `${turnSecret}\n`, { mode: 0o600 });
    // One lab per ordered pair of router kinds that some run needs.
    const labKinds = new Map<string, [NatKind, NatKind]>();
    for (const [first, second] of cells) {
      if (positions.includes('a')) labKinds.set(`${first}/${second}`, [first, second]);
      if (positions.includes('b')) labKinds.set(`${second}/${first}`, [second, first]);
    }
    for (const [a, b] of labKinds.values()) {
      options.signal?.throwIfAborted();
      const specs = labRuns(a, b, cells, positions, relays, runs);
      if (specs.length > 0) await runLab(a, b, specs, files, turnSecret, options, cli, out);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return {
    kinds: [...new Set(cells.flat())],
    relays,
    runsPerCell: runs * positions.length,
    startedAt,
    durationMs: performance.now() - began,
    runs: out,
    cells: summarizeCells(out, relays, cells),
  };
}
