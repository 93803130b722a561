/**
 * The lab's attacker, run inside a namespace: it floods a server with junk of every shape and replays
 * every UDP datagram of a live capture (pcap on stdin, from `tcpdump -U -w -`) from its own address to
 * the original destination. Every loop is bounded in count and time. It prints one JSON line of
 * statistics on stdout when done.
 *
 *   node attacker.js --bind ADDR --server ADDR:PORT --junk N --seconds S [--replay] [--replay-limit N]
 *                    [--replay-file PCAP --replay-every MS]
 *
 * --replay replays a live capture from stdin, each datagram once; --replay-file replays a whole recorded capture (a
 * finished session) every MS milliseconds until the time is up.
 */
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { PcapReader } from './pcap.js';

const { values } = parseArgs({
  options: {
    bind: { type: 'string' },
    server: { type: 'string' },
    junk: { type: 'string', default: '0' },
    seconds: { type: 'string', default: '5' },
    replay: { type: 'boolean', default: false },
    'replay-limit': { type: 'string', default: '5000' },
    'ignore-port': { type: 'string', default: '' },
    'replay-file': { type: 'string' },
    'replay-every': { type: 'string', default: '200' },
  },
});
const bind = values.bind ?? '203.0.113.2';
const [serverHost, serverPort] = (values.server ?? '203.0.113.1:3478').split(':');
const junkCount = Math.min(Number(values.junk), 2_000_000);
const deadline = Date.now() + Math.min(Number(values.seconds), 120) * 1000;
const replayLimit = Math.min(Number(values['replay-limit']), 100_000);

const stats = { junkSent: 0, junkBytes: 0, replayed: 0, replayedBytes: 0, received: 0, receivedBytes: 0, receivedFromServer: 0, receivedBytesFromServer: 0 };
const socket = dgram.createSocket('udp4');
socket.on('error', () => undefined);
socket.on('message', (m, r) => {
  stats.received++;
  stats.receivedBytes += m.length;
  if (r.address === serverHost && String(r.port) === serverPort) {
    stats.receivedFromServer++;
    stats.receivedBytesFromServer += m.length;
  }
});
await new Promise<void>((resolve) => socket.bind(0, bind, resolve));

const seen = new Set<string>();
const captured: Uint8Array[] = [];

function junk(i: number): Uint8Array {
  switch (i % 8) {
    case 0: return new Uint8Array(0);
    case 1: return Uint8Array.of(i & 0xff);
    case 2: return randomBytes(1 + (i % 1400));
    case 3: { // a STUN header with a lying length
      const b = Buffer.alloc(20 + (i % 64));
      b.writeUInt16BE(0x0001, 0); b.writeUInt16BE(0xfffc, 2); b.writeUInt32BE(0x2112a442, 4);
      return b;
    }
    case 4: { // an unknown STUN method
      const b = Buffer.alloc(20);
      b.writeUInt16BE(0x0fef, 0); b.writeUInt32BE(0x2112a442, 4);
      return b;
    }
    case 5: { // a truncated capture
      const c = captured[i % Math.max(1, captured.length)];
      return c ? c.subarray(0, i % (c.length + 1)) : randomBytes(24);
    }
    case 6: { // an oversized attribute
      const b = Buffer.alloc(40);
      b.writeUInt16BE(0x00b1 | 0x0000, 0); b.writeUInt16BE(20, 2); b.writeUInt32BE(0x2112a442, 4);
      b.writeUInt16BE(0x4b02, 20); b.writeUInt16BE(0x7000, 22);
      return b;
    }
    default: return randomBytes(20 + (i % 100));
  }
}

const replay = (d: { dst: { address: string; port: number }; src: { address: string }; payload: Uint8Array }): void => {
  if (d.src.address === bind || stats.replayed >= replayLimit || Date.now() > deadline) return;
  const key = `${Buffer.from(d.payload).toString('base64')} ${d.dst.address} ${d.dst.port}`;
  if (seen.has(key)) return;
  seen.add(key);
  captured.push(d.payload);
  stats.replayed++;
  stats.replayedBytes += d.payload.length;
  socket.send(d.payload, d.dst.port, d.dst.address);
};

if (values.replay) {
  const reader = new PcapReader();
  process.stdin.on('data', (chunk: Buffer) => {
    for (const d of reader.push(chunk)) replay(d);
  });
}

if (values['replay-file'] !== undefined) {
  const session = new PcapReader().push(readFileSync(values['replay-file'])).filter((d) => d.src.address !== bind);
  const every = Math.max(20, Number(values['replay-every']));
  const replayAll = (): void => {
    for (const d of session) {
      if (stats.replayed >= replayLimit || Date.now() > deadline) return;
      stats.replayed++;
      stats.replayedBytes += d.payload.length;
      socket.send(d.payload, d.dst.port, d.dst.address);
    }
  };
  replayAll();
  const timer = setInterval(replayAll, every);
  setTimeout(() => { clearInterval(timer); }, Math.max(0, deadline - Date.now()));
}

// Junk in batches, so the event loop can also replay and count answers.
for (let i = 0; i < junkCount && Date.now() < deadline; ) {
  for (let j = 0; j < 200 && i < junkCount; j++, i++) {
    const b = junk(i);
    stats.junkSent++;
    stats.junkBytes += b.length;
    socket.send(b, Number(serverPort), serverHost);
  }
  await new Promise((r) => setImmediate(r));
}
while (Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
process.stdin.destroy();
socket.close();
process.stdout.write(`${JSON.stringify(stats)}\n`);
