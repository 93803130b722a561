/**
 * A UDP socket puppet for lab tests, run inside a namespace: `node udp-agent.js [--max-seconds N]`.
 *
 * Commands arrive as JSON lines on stdin, events leave as JSON lines on stdout:
 * ```
 * in:  {"op":"bind","id":"s1","address":"0.0.0.0","port":0}      out: {"ev":"bound","id":"s1","address":…,"port":…}
 * in:  {"op":"send","id":"s1","seq":7,"address":…,"port":…,"data":"…"}   out: {"ev":"sent","id":"s1","seq":7}
 * in:  {"op":"close","id":"s1"}                                    out: {"ev":"closed","id":"s1"}
 *                                      on every datagram received, out: {"ev":"recv","id":"s1","address":…,"port":…,"data":"…"}
 *                                      on any failure,                 out: {"ev":"error","id":…,"message":…}
 * ```
 * It sends only when told, one datagram per command, and exits when stdin closes or after --max-seconds (default 60),
 * so that no traffic outlives the test that drives it. Sockets are unconnected: an ICMP error must not kill the agent
 * (nat-lab.md, pitfall 5).
 */

import { createSocket, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { createInterface } from 'node:readline';

interface Command {
  readonly op: string;
  readonly id: string;
  readonly address?: string;
  readonly port?: number;
  readonly data?: string;
  readonly seq?: number;
}

const sockets = new Map<string, Socket>();

function emit(event: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(event)}\n`);
}

function parseCommand(line: string): Command | null {
  try {
    const value: unknown = JSON.parse(line);
    if (typeof value !== 'object' || value === null) return null;
    const { op, id } = value as Record<string, unknown>;
    return typeof op === 'string' && typeof id === 'string' ? (value as Command) : null;
  } catch {
    return null;
  }
}

function bind(command: Command): void {
  const address = command.address ?? '0.0.0.0';
  const socket = createSocket({ type: isIPv6(address) ? 'udp6' : 'udp4', ...(isIPv6(address) ? { ipv6Only: true } : {}) });
  socket.on('error', (err) => {
    emit({ ev: 'error', id: command.id, message: err.message });
  });
  socket.on('message', (data, rinfo) => {
    emit({ ev: 'recv', id: command.id, address: rinfo.address, port: rinfo.port, data: data.toString('utf8') });
  });
  socket.bind({ address, port: command.port ?? 0, exclusive: true }, () => {
    sockets.set(command.id, socket);
    const local = socket.address();
    emit({ ev: 'bound', id: command.id, address: local.address, port: local.port });
  });
}

function handle(command: Command): void {
  const socket = sockets.get(command.id);
  switch (command.op) {
    case 'bind':
      bind(command);
      return;
    case 'send':
      if (socket === undefined || command.address === undefined || command.port === undefined) {
        emit({ ev: 'error', id: command.id, message: 'send needs a bound id, an address and a port' });
        return;
      }
      socket.send(command.data ?? '', command.port, command.address, (err) => {
        if (err) emit({ ev: 'error', id: command.id, message: err.message });
        else emit({ ev: 'sent', id: command.id, seq: command.seq ?? 0 });
      });
      return;
    case 'close':
      sockets.delete(command.id);
      socket?.close();
      emit({ ev: 'closed', id: command.id });
      return;
    default:
      emit({ ev: 'error', id: command.id, message: `unknown op ${command.op}` });
  }
}

const maxSecondsFlag = process.argv.indexOf('--max-seconds');
const maxSeconds = maxSecondsFlag >= 0 ? Number(process.argv[maxSecondsFlag + 1]) : 60;
if (!Number.isFinite(maxSeconds) || maxSeconds <= 0) {
  process.stderr.write('usage: udp-agent [--max-seconds N]  (JSON commands on stdin; see the source)\n');
  process.exit(2);
}

const rl = createInterface({ input: process.stdin });
const lifetime = setTimeout(() => {
  process.stderr.write(`udp-agent: lifetime of ${maxSeconds} s is over\n`);
  rl.close();
}, maxSeconds * 1000);
rl.on('line', (line) => {
  const command = parseCommand(line);
  if (command === null) emit({ ev: 'error', id: '', message: `bad command: ${line}` });
  else handle(command);
});
rl.on('close', () => {
  clearTimeout(lifetime);
  for (const socket of sockets.values()) socket.close();
  sockets.clear();
});
emit({ ev: 'ready', id: '' });
