/**
 * WireGuard in the NAT lab: a wireguard-go interface per host, named with the run id so names are unique on the
 * machine (wireguard-go's control socket lives in /var/run/wireguard, outside the namespaces), tunnel addresses from
 * 192.0.2.192/28 (documentation range, unused by the lab's LANs).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { UdpAgent, type HostNode, type Lab } from '../../src/lab/index.js';
import type { LabProcess } from '../../src/lab/process.js';
import { CLI, peerEnv } from './peers.js';

export const WG_SECRET = 'wireguard lab secret';
const SOCKET_DIR = '/var/run/wireguard';

export interface WgHost {
  readonly node: HostNode;
  readonly name: string;
  readonly privateKey: string;
  readonly publicKey: string;
  /** Address inside the tunnel. */
  readonly tunnel: string;
  listenPort: number;
  process: LabProcess;
}

const TUNNEL: Record<HostNode, string> = { hA: '192.0.2.193', hB: '192.0.2.194', hA2: '192.0.2.195' };

export function wgAvailable(): boolean {
  try {
    execFileSync('wg', ['--version'], { stdio: 'ignore' });
    execFileSync('wireguard-go', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function socketPath(name: string): string {
  return `${SOCKET_DIR}/${name}.sock`;
}

async function waitFor(test: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!test()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function wgOk(lab: Lab, node: HostNode, args: string[]): Promise<string> {
  const r = await lab.exec(node, 'wg', args, { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `wg ${args.join(' ')} in ${node}: ${r.stderr}`);
  return r.stdout;
}

async function ipOk(lab: Lab, node: HostNode, args: string[]): Promise<void> {
  const r = await lab.exec(node, 'ip', args, { timeoutMs: 10_000 });
  assert.equal(r.code, 0, `ip ${args.join(' ')} in ${node}: ${r.stderr}`);
}

/** Starts wireguard-go in `node` (foreground, so the lab owns its PID) and configures key, port and tunnel address. */
export async function startWg(lab: Lab, node: HostNode, listenPort: number, keys?: { privateKey: string; publicKey: string }): Promise<WgHost> {
  const name = `bw${lab.runId}${node}`.slice(0, 15);
  const privateKey = keys?.privateKey ?? execFileSync('wg', ['genkey'], { encoding: 'utf8' }).trim();
  const publicKey = keys?.publicKey ?? execFileSync('wg', ['pubkey'], { input: `${privateKey}\n`, encoding: 'utf8' }).trim();
  const host: WgHost = { node, name, privateKey, publicKey, tunnel: TUNNEL[node], listenPort, process: undefined as unknown as LabProcess };
  await launch(lab, host);
  return host;
}

async function launch(lab: Lab, host: WgHost): Promise<void> {
  host.process = lab.spawn(host.node, 'wireguard-go', ['-f', host.name], {
    env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1', LOG_LEVEL: 'error' },
  });
  await waitFor(() => existsSync(socketPath(host.name)), 5000, `wireguard-go ${host.name}`);
  const dir = mkdtempSync(join(tmpdir(), 'burrow-wg-lab-'));
  try {
    writeFileSync(join(dir, 'key'), `${host.privateKey}\n`, { mode: 0o600 });
    await wgOk(lab, host.node, ['set', host.name, 'private-key', join(dir, 'key'), 'listen-port', String(host.listenPort)]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  await ipOk(lab, host.node, ['address', 'add', `${host.tunnel}/28`, 'dev', host.name]);
  await ipOk(lab, host.node, ['link', 'set', host.name, 'up']);
}

/** Stops wireguard-go by PID and waits for it to remove its interface and socket. */
export async function stopWg(host: WgHost): Promise<void> {
  host.process.kill('SIGTERM');
  await host.process.exited;
  removeSocket(host.name);
}

/** Restarts wireguard-go on a new listen port with the same key and the same peers (without endpoints). */
export async function restartWg(lab: Lab, host: WgHost, listenPort: number, peers: readonly WgHost[]): Promise<void> {
  await stopWg(host);
  host.listenPort = listenPort;
  await launch(lab, host);
  for (const p of peers) await addPeer(lab, host, p);
}

/** Adds `peer` to `host` with its tunnel address and no endpoint: what burrow must find. */
export async function addPeer(lab: Lab, host: WgHost, peer: WgHost): Promise<void> {
  await wgOk(lab, host.node, ['set', host.name, 'peer', peer.publicKey, 'allowed-ips', `${peer.tunnel}/32`]);
}

export function removeSocket(name: string): void {
  rmSync(socketPath(name), { force: true });
}

/** After the lab is destroyed: no control socket of this run may remain. */
export function assertNoWgLeft(runId: string): void {
  if (!existsSync(SOCKET_DIR)) return;
  const left = execFileSync('ls', [SOCKET_DIR], { encoding: 'utf8' }).split('\n').filter((f) => f.includes(runId));
  for (const f of left) rmSync(`${SOCKET_DIR}/${f}`, { force: true });
  assert.deepEqual(left, [], `WireGuard sockets of run ${runId} were left behind`);
}

export interface PeerRow {
  readonly key: string;
  readonly endpoint: string;
  readonly latestHandshake: number;
}

export async function wgPeers(lab: Lab, host: WgHost): Promise<PeerRow[]> {
  const text = await wgOk(lab, host.node, ['show', host.name, 'dump']);
  return text.trim().split('\n').slice(1).map((l) => l.split('\t')).map((f) => ({ key: f[0] ?? '', endpoint: f[2] ?? '', latestHandshake: Number(f[4]) }));
}

/** Starts `burrow serve` in pub with nothing WireGuard-specific. */
export async function startServer(lab: Lab, listen = '203.0.113.1:3478', extra: readonly string[] = []): Promise<LabProcess> {
  const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', listen, '--log-format', 'json', '--log-level', 'debug', ...extra], { env: peerEnv(WG_SECRET) });
  await server.waitForOutput('stderr', '"listening"', 5000);
  return server;
}

export function burrowWg(lab: Lab, host: WgHost, extra: readonly string[] = [], server = '203.0.113.1:3478'): LabProcess {
  return lab.spawn(host.node, process.execPath, [CLI, 'wg', '--interface', host.name, '--server', server, ...extra], { env: peerEnv(WG_SECRET) });
}

/** UDP through the tunnel from `a` to `b`: one datagram must arrive within `tries` attempts 300 ms apart. */
export async function tunnelCarries(lab: Lab, a: WgHost, b: WgHost, tag: string, tries = 20): Promise<void> {
  const sender = await UdpAgent.start(lab, a.node, 30);
  const receiver = await UdpAgent.start(lab, b.node, 30);
  try {
    await sender.bind('s', a.tunnel, 0);
    const to = await receiver.bind('r', b.tunnel, 7000);
    for (let i = 0; i < tries; i++) {
      await sender.send('s', to, tag);
      if (receiver.received(tag).length > 0) return;
      await delay(300);
    }
    assert.fail(`no UDP datagram from ${a.node} reached ${b.node} through the tunnel`);
  } finally {
    await sender.stop();
    await receiver.stop();
  }
}
