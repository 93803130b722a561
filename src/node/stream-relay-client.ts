/**
 * The client side of the stream relay handshake (docs/protocol.md, "Stream relay"): connects to the server's TCP
 * port, authenticates with the built-in relay credentials for NAME→PEER, waits until the partner has connected too,
 * and returns the socket, from then on a plain byte stream to the partner (run SecureStream over it). Quiet: no
 * output; errors are BurrowErrors with structured details.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import type { Endpoint } from '../codec/address.js';
import { HEADER_LENGTH, MAX_MESSAGE_LENGTH } from '../codec/stun.js';
import { builtinCredentials, decodeTurn, encodeTurn, longTermKey, verifyTurnIntegrity, type TurnMessage } from '../codec/turn.js';
import type { NetworkKeys } from '../crypto/keys.js';
import { STREAM_RELAY_METHOD } from '../server/relay/stream.js';

export interface StreamRelayConnectOptions {
  readonly server: Endpoint;
  readonly keys: NetworkKeys;
  readonly name: string;
  readonly peer: string;
  /** The local address to connect from (default: the system's choice). */
  readonly localAddress?: string;
  /** Gives up after this long (the server waits up to 30 s for the partner). Default 35 s. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** Why a stream relay connection failed: the server's error code and reason, or the transport's. */
export class StreamRelayError extends Error {
  constructor(
    readonly code: number | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'StreamRelayError';
  }
}

/** Connects through the server's stream relay; resolves with the spliced socket. */
export async function connectStreamRelay(options: StreamRelayConnectOptions): Promise<net.Socket> {
  options.signal?.throwIfAborted();
  const id = { expiry: Math.floor(Date.now() / 1000) + 3600, networkIdHex: options.keys.networkIdHex, name: options.name, peer: options.peer };
  const { username, password } = builtinCredentials(options.keys.relay, id);
  const socket = net.connect({ host: options.server.address, port: options.server.port, ...(options.localAddress !== undefined && !isWildcard(options.localAddress) ? { localAddress: options.localAddress } : {}) });
  socket.setNoDelay(true);
  try {
    return await new Promise<net.Socket>((resolve, reject) => {
      let pending: Uint8Array = new Uint8Array(0);
      let key: Uint8Array | undefined;
      let done = false;
      const finish = (err: Error | undefined): void => {
        if (done) return;
        done = true;
        // Paused, so that nothing is read before the caller listens.
        socket.pause();
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        socket.removeListener('data', onData);
        socket.removeListener('error', onError);
        socket.removeListener('close', onClose);
        if (err) {
          reject(err);
          return;
        }
        // Flowing again as soon as the caller listens for data, like a fresh socket (pipe() resumes by itself).
        const onListener = (event: string | symbol): void => {
          if (event !== 'data') return;
          socket.removeListener('newListener', onListener);
          process.nextTick(() => socket.resume());
        };
        socket.on('newListener', onListener);
        resolve(socket);
      };
      const onAbort = (): void => { finish(options.signal?.reason instanceof Error ? options.signal.reason : new Error('aborted')); };
      const onError = (err: Error): void => { finish(new StreamRelayError(undefined, `stream relay connection failed: ${err.message}`)); };
      const onClose = (): void => { finish(new StreamRelayError(undefined, 'the server closed the stream relay connection')); };
      const timer = setTimeout(() => { finish(new StreamRelayError(undefined, `no stream relay partner within ${options.timeoutMs ?? 35_000} ms`)); }, options.timeoutMs ?? 35_000);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      const send = (nonce: string | undefined): void => {
        const fields = nonce === undefined ? {} : { username, realm: 'burrow', nonce };
        socket.write(encodeTurn(STREAM_RELAY_METHOD, 'request', randomBytes(12), fields, key ? { key } : {}));
      };
      const handle = (bytes: Uint8Array, m: TurnMessage): void => {
        if (m.cls === 'success') {
          if (!key || verifyTurnIntegrity(bytes, m, key) !== 'valid') {
            finish(new StreamRelayError(undefined, 'the stream relay answer does not authenticate'));
            return;
          }
          // Anything that came with the answer is the partner's first bytes.
          const early = pending;
          finish(undefined);
          if (early.length > 0) socket.unshift(Buffer.from(early));
          return;
        }
        const code = m.error?.code;
        if ((code === 401 || code === 438) && m.nonce !== undefined && (key === undefined || code === 438)) {
          key = longTermKey(username, m.realm ?? 'burrow', password);
          send(m.nonce);
          return;
        }
        finish(new StreamRelayError(code, `stream relay refused: ${code ?? '?'} ${m.error?.reason ?? ''}`.trim()));
      };
      // One message at a time: after the success answer the stream is the partner's bytes, not STUN.
      const onData = (chunk: Buffer): void => {
        pending = pending.length > 0 ? Buffer.concat([pending, chunk]) : chunk;
        while (!done && pending.length >= HEADER_LENGTH) {
          const total = HEADER_LENGTH + (((pending[2] ?? 0) << 8) | (pending[3] ?? 0));
          if (((pending[0] ?? 0) & 0xc0) !== 0 || total > MAX_MESSAGE_LENGTH) {
            finish(new StreamRelayError(undefined, 'the server answered something that is not STUN'));
            return;
          }
          if (pending.length < total) return;
          const bytes = pending.subarray(0, total);
          pending = pending.subarray(total);
          const d = decodeTurn(bytes);
          if (!d.ok || d.msg.method !== STREAM_RELAY_METHOD) {
            finish(new StreamRelayError(undefined, 'the server answered something that is not a stream relay answer'));
            return;
          }
          handle(bytes, d.msg);
        }
      };
      socket.on('data', onData);
      socket.on('error', onError);
      socket.on('close', onClose);
      socket.once('connect', () => { send(undefined); });
    });
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

function isWildcard(address: string): boolean {
  return address === '0.0.0.0' || address === '::';
}
