/** Loopback SecureStream pairs (optionally through a forwarder that flips a byte) and scratch directories. */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { SecureStream } from '../../src/node/secure-stream.js';

export const SECRET = 'transfer test secret';
const AUTH_KEY = deriveNetworkKeys(Buffer.from(SECRET)).streamAuth;
const CONTEXT = Buffer.from('burrow transfer tests');

/** Both ends of one loopback TCP connection, half-open allowed like a punched one. */
export async function tcpPair(): Promise<[net.Socket, net.Socket]> {
  const server = net.createServer({ allowHalfOpen: true });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
  await new Promise<void>((resolve, reject) => {
    client.once('connect', resolve);
    client.once('error', reject);
  });
  const other = await accepted;
  // Stops listening; the callback would wait for the connection itself to close.
  server.close();
  return [client, other];
}

export interface Pair {
  /** alice's end (the sender in these tests). */
  readonly sender: SecureStream;
  /** bob's end. */
  readonly receiver: SecureStream;
  /** The sender's transport, to break it mid-transfer. */
  readonly senderSocket: net.Socket;
  /** Every socket, for the leak checks. */
  readonly sockets: readonly net.Socket[];
  /** Resolves once every socket has closed. */
  closed(): Promise<void>;
}

export interface PairOptions {
  /** Flip one bit of the sender → receiver TCP payload at this offset (through a forwarder). */
  readonly flipAt?: number;
}

/** An authenticated, encrypted stream between "alice" and "bob" over loopback TCP. */
export async function securePair(options: PairOptions = {}): Promise<Pair> {
  const sockets: net.Socket[] = [];
  let senderSocket: net.Socket;
  let receiverSocket: net.Socket;
  if (options.flipAt === undefined) {
    [senderSocket, receiverSocket] = await tcpPair();
    sockets.push(senderSocket, receiverSocket);
  } else {
    const [a, a2] = await tcpPair();
    const [b2, b] = await tcpPair();
    sockets.push(a, a2, b2, b);
    senderSocket = a;
    receiverSocket = b;
    forward(a2, b2, options.flipAt);
    forward(b2, a2, undefined);
  }
  // Registered now: a socket's `closed` flag turns true before its handle has actually closed.
  const allClosed = Promise.all(sockets.map((s) => new Promise<void>((r) => s.once('close', () => { r(); }))));
  const [sender, receiver] = await Promise.all([
    SecureStream.open(senderSocket, { name: 'alice', peer: 'bob', authKey: AUTH_KEY, context: CONTEXT }),
    SecureStream.open(receiverSocket, { name: 'bob', peer: 'alice', authKey: AUTH_KEY, context: CONTEXT }),
  ]);
  return {
    sender,
    receiver,
    senderSocket,
    sockets,
    closed: () => allClosed.then(() => undefined),
  };
}

/** A man in the middle: copies `from` to `to`, flipping the low bit of the byte at `flipAt`. */
function forward(from: net.Socket, to: net.Socket, flipAt: number | undefined): void {
  let offset = 0;
  from.on('data', (chunk: Buffer) => {
    if (flipAt !== undefined && flipAt >= offset && flipAt < offset + chunk.length) {
      chunk = Buffer.from(chunk);
      chunk[flipAt - offset] = (chunk[flipAt - offset] ?? 0) ^ 1;
    }
    offset += chunk.length;
    if (!to.write(chunk)) from.pause();
  });
  to.on('drain', () => from.resume());
  from.on('end', () => to.end());
  from.on('close', () => to.destroy());
  from.on('error', () => undefined);
}

export async function scratch(prefix = 'burrow-transfer-'): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

export async function listDir(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** Active handles of the kinds a transfer could leak. */
export function liveHandles(): string[] {
  return process.getActiveResourcesInfo().filter((r) => /TCP|Timeout|FSReq|FileHandle/.test(r));
}
