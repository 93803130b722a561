/**
 * An attacker's UDP socket on loopback for the adversarial tests: bound to its own 127.0.0.0/8 address (so that the
 * server sees distinct sources), it counts every datagram and byte it sends and receives, on the wire.
 */
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServerProcess } from './server-harness.js';

export interface Attacker {
  readonly address: string;
  readonly port: number;
  readonly counts: { sent: number; sentBytes: number; received: number; receivedBytes: number };
  /** Replies received, in order. */
  readonly replies: Buffer[];
  /** Sends and resolves once the datagram has left. */
  send(bytes: Uint8Array, port: number, host?: string): Promise<void>;
  /** Sends all, at most `window` in flight. */
  sendAll(datagrams: readonly Uint8Array[], port: number, window?: number): Promise<void>;
  close(): Promise<void>;
}

/** Opens a socket on `address` (any 127.x.y.z works on Linux loopback). Keeps replies unless `keepReplies` is false. */
export async function openAttacker(address: string, keepReplies = true): Promise<Attacker> {
  const socket = dgram.createSocket('udp4');
  const counts = { sent: 0, sentBytes: 0, received: 0, receivedBytes: 0 };
  const replies: Buffer[] = [];
  socket.on('message', (m) => {
    counts.received++;
    counts.receivedBytes += m.length;
    if (keepReplies) replies.push(m);
  });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve) => socket.bind(0, address, resolve));
  const send = (bytes: Uint8Array, port: number, host = '127.0.0.1'): Promise<void> =>
    new Promise((resolve) => {
      counts.sent++;
      counts.sentBytes += bytes.length;
      socket.send(bytes, port, host, () => {
        resolve();
      });
    });
  return {
    address,
    port: socket.address().port,
    counts,
    replies,
    send,
    async sendAll(datagrams, port, window = 64) {
      for (let i = 0; i < datagrams.length; i += window) {
        await Promise.all(datagrams.slice(i, i + window).map((d) => send(d, port)));
      }
    },
    close: () => new Promise<void>((resolve) => socket.close(() => { resolve(); })),
  };
}

/**
 * Waits until the server has handled `expected` datagrams in all (so none was lost on the way and every answer has
 * been sent), then a little longer for the answers to arrive. Fails after `timeoutMs`.
 */
export async function settle(server: ServerProcess, expected: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const handled = await server.handled();
    if (handled >= expected) break;
    if (Date.now() > deadline) throw new Error(`the server handled ${handled} of ${expected} datagrams`);
    await sleep(20);
  }
  await sleep(50);
}

export interface Send {
  readonly from: Attacker;
  readonly bytes: Uint8Array;
  readonly port: number;
}

/**
 * Sends `count` datagrams made by `make(i)`, in order, keeping at most `window` of them not yet handled by the server:
 * its socket buffer holds only a couple of hundred small datagrams, and a sender that runs ahead of it loses the rest
 * in the kernel. Datagrams that the server has not handled after 200 ms without progress count as lost. Then waits for
 * the server to have handled the rest (see `settle`). Returns how many it handled and how many were lost.
 */
export async function pacedFlood(server: ServerProcess, count: number, make: (i: number) => Send, window = 128, timeoutMs = 60_000): Promise<{ handled: number; lost: number }> {
  const base = await server.handled();
  const deadline = Date.now() + timeoutMs;
  let handled = base;
  let lost = 0;
  let stalledSince = Date.now();
  for (let i = 0; i < count; ) {
    const inFlight = i - lost - (handled - base);
    const room = Math.min(window - inFlight, count - i);
    if (room > 0) {
      const chunk: Promise<void>[] = [];
      for (let j = 0; j < room; j++, i++) {
        const s = make(i);
        chunk.push(s.from.send(s.bytes, s.port));
      }
      await Promise.all(chunk);
    }
    const now = await server.handled();
    if (now !== handled || room > 0) stalledSince = Date.now();
    else if (Date.now() - stalledSince > 200) {
      lost += i - lost - (now - base);
      stalledSince = Date.now();
    } else await sleep(1);
    handled = now;
    if (Date.now() > deadline) throw new Error(`the server handled ${handled - base} of the ${i} datagrams sent so far (${lost} lost)`);
  }
  // The tail: wait until all are handled, or nothing has moved for 200 ms (the rest were lost).
  for (let last = handled, since = Date.now(); handled - base < count - lost && Date.now() - since < 200; ) {
    await sleep(5);
    handled = await server.handled();
    if (handled !== last) [last, since] = [handled, Date.now()];
  }
  await sleep(50); // for the answers to arrive
  const final = Math.min(count, handled - base);
  return { handled: final, lost: count - final };
}

/** `pacedFlood` over a list; fails if the kernel lost any (tests that count answers need every datagram handled). */
export async function pacedSend(server: ServerProcess, sends: readonly Send[], window = 128, timeoutMs = 60_000): Promise<void> {
  const { lost } = await pacedFlood(server, sends.length, (i) => sends[i]!, window, timeoutMs);
  if (lost > 0) throw new Error(`${lost} of ${sends.length} datagrams were lost on loopback before the server read them`);
}

const FLOOD_PROGRAM = fileURLToPath(new URL('../../../test/support/flood.py', import.meta.url));

/**
 * Floods the server with `datagrams` (cycled) from `sources` (127.x addresses) as fast as a small Python sender can
 * (test/support/flood.py: a tight sendto loop, several times cheaper per datagram than Node), unpaced: the server's
 * socket buffer overflows and the kernel drops the excess, as under a real flood. Stops once the server has handled
 * `target` datagrams. Returns how many were sent and handled.
 */
export async function floodUntil(
  server: ServerProcess,
  target: number,
  datagrams: readonly { bytes: Uint8Array; port: number }[],
  sources: readonly string[],
  timeoutMs = 120_000,
): Promise<{ sent: number; handled: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'burrow-flood-'));
  try {
    const file = join(dir, 'datagrams');
    // One record per datagram: port (u16), length (u16), bytes.
    await writeFile(file, Buffer.concat(datagrams.flatMap((d) => {
      const head = Buffer.alloc(4);
      head.writeUInt16BE(d.port, 0);
      head.writeUInt16BE(d.bytes.length, 2);
      return [head, Buffer.from(d.bytes)];
    })));
    const base = await server.handled();
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    const sender = spawn('python3', [FLOOD_PROGRAM, '--file', file, '--sources', sources.join(','), '--max-seconds', String(Math.ceil(timeoutMs / 1000))], { stdio: ['ignore', 'pipe', 'pipe'], env });
    let out = '';
    let err = '';
    sender.stdout.on('data', (d: Buffer) => (out += d.toString()));
    sender.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => sender.on('exit', (code) => { resolve(code); }));
    const sender$ = { running: true };
    void exited.then(() => (sender$.running = false));
    let handled = 0;
    const deadline = Date.now() + timeoutMs;
    while (sender$.running && Date.now() < deadline) {
      await sleep(100);
      handled = (await server.handled()) - base;
      if (handled >= target) break;
    }
    if (sender$.running) process.kill(sender.pid!, 'SIGTERM');
    const code = await exited;
    handled = (await server.handled()) - base;
    const stats = JSON.parse(out.trim().split('\n').at(-1) ?? '{}') as { sent?: number };
    if (stats.sent === undefined) throw new Error(`the flood sender failed (exit ${String(code)}): ${err}`);
    if (handled < target) throw new Error(`the server handled ${handled} of ${target} datagrams (${stats.sent} sent)`);
    return { sent: stats.sent, handled };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
