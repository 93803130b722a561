/**
 * `startTstunServer()`: the Node driver around TstunCore (src/server/tstun.ts). It owns the TCP
 * listener, the sockets and one timer; every decision is the core's.
 */
import net from 'node:net';
import { randomInt } from 'node:crypto';
import { normaliseAddress, parseHostPort, type Endpoint } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { TSTUN_PORT, TstunCore, type TstunAction, type TstunConnectionId, type TstunEvent, type TstunLimits, type TstunStats } from '../server/tstun.js';

export interface TstunServerOptions {
  /** `[HOST:]PORT` to listen on (TCP); default `[::]:3477`, dual-stack, falling back to 0.0.0.0. */
  readonly listen?: string;
  readonly limits?: Partial<TstunLimits>;
  readonly onEvent?: (event: TstunServerEvent) => void;
  readonly signal?: AbortSignal;
}

/** The core's events, plus the one thing only the driver can see: a bug in the core. */
export type TstunServerEvent = TstunEvent | { readonly type: 'internal-error'; readonly detail: string };

export interface TstunServer {
  readonly address: Endpoint;
  readonly stats: Readonly<TstunStats>;
  /** Stops listening and drops every connection, waiting or not. Idempotent. */
  close(): Promise<void>;
}

function listenOn(server: net.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      server.off('listening', onListening);
      reject(err);
    };
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // '::' is dual-stack by default (ipv6Only: false): IPv4 clients appear as ::ffff:a.b.c.d.
    server.listen({ host, port });
  });
}

async function bindListen(server: net.Server, host: string, port: number): Promise<void> {
  try {
    await listenOn(server, host, port);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (host === '::' && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
      await bindListen(server, '0.0.0.0', port);
      return;
    }
    throw BurrowError.bindFailed({ transport: 'tcp', address: host, port, role: 'tstun' }, err);
  }
}

export async function startTstunServer(options: TstunServerOptions = {}): Promise<TstunServer> {
  options.signal?.throwIfAborted();
  const text = options.listen ?? `[::]:${TSTUN_PORT}`;
  const parsed = parseHostPort(text, TSTUN_PORT);
  if (!parsed.ok) throw BurrowError.invalidOption('tstun', `not [HOST:]PORT (${parsed.reason})`, text);
  const host = parsed.host === '' ? '::' : normaliseAddress(parsed.host);
  if (!host) throw BurrowError.invalidOption('tstun', `host "${parsed.host}" is not an IP address`, text);
  const core = new TstunCore({ ...(options.limits ? { limits: options.limits } : {}), seed: randomInt(0, 2 ** 31) });
  // Monotonic: the core's expiry order depends on time never going back.
  const clock = (): number => performance.now();

  const sockets = new Map<TstunConnectionId, net.Socket>();
  let nextId = 1;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let timerAt = Infinity;

  const emit = (event: TstunServerEvent): void => {
    try {
      options.onEvent?.(event);
    } catch {
      // A throwing listener must not take the server down from inside a socket callback.
    }
  };
  const execute = (actions: TstunAction[]): void => {
    for (const a of actions) {
      switch (a.type) {
        case 'write':
          sockets.get(a.id)?.write(a.data);
          break;
        case 'close':
          sockets.get(a.id)?.end();
          break;
        case 'destroy':
          // Stays in `sockets` until its 'close' event; the core has already forgotten it.
          sockets.get(a.id)?.destroy();
          break;
        case 'event':
          emit(a.event);
          break;
        default:
          a satisfies never;
      }
    }
  };
  const onTimer = (): void => {
    timer = undefined;
    timerAt = Infinity;
    run(undefined, () => core.handleTimer(clock()));
  };
  /** One timer, set for the core's next deadline; an earlier pending one is kept (it will re-arm). */
  const reschedule = (): void => {
    const next = core.nextTimeoutAt;
    if (stopped || next === undefined || (timer !== undefined && timerAt <= next)) return;
    clearTimeout(timer);
    timerAt = next;
    timer = setTimeout(onTimer, Math.max(1, Math.ceil(next - clock())));
    timer.unref();
  };
  /** Feeds the core. It never throws on input; this guard keeps even a bug from taking the server down. */
  const run = (id: TstunConnectionId | undefined, input: () => TstunAction[]): void => {
    if (stopped) return;
    try {
      execute(input());
    } catch (err) {
      if (id !== undefined) sockets.get(id)?.destroy();
      emit({ type: 'internal-error', detail: err instanceof Error ? err.message : String(err) });
    }
    reschedule();
  };

  // allowHalfOpen: the client half-closes before we answer; without it Node would end our side on
  // the client's FIN and the answer could never be written.
  const server = net.createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const { remoteAddress, remotePort } = socket;
    if (stopped || remoteAddress === undefined || remotePort === undefined) {
      socket.destroy(); // closed before we looked, or we are shutting down
      return;
    }
    const id = nextId++;
    sockets.set(id, socket);
    socket.on('data', (chunk: Buffer) => {
      run(id, () => core.handleData(id, chunk, clock()));
    });
    socket.on('end', () => {
      run(id, () => core.handleEnded(id));
    });
    socket.on('error', () => undefined); // resets and the like; 'close' follows and tells the core
    socket.on('close', () => {
      sockets.delete(id);
      run(id, () => core.handleClosed(id));
    });
    run(id, () => core.handleConnected(id, { address: remoteAddress, port: remotePort }, clock()));
  });
  // Accept errors (EMFILE and friends) are transient; the server keeps listening.
  const onListenError = (): void => undefined;

  await bindListen(server, host, parsed.port);
  server.on('error', onListenError);

  let closed: Promise<void> | undefined;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      stopped = true;
      options.signal?.removeEventListener('abort', onAbort);
      clearTimeout(timer);
      timer = undefined;
      const done = new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
      });
      for (const s of sockets.values()) s.destroy();
      // server.close() calls back once every connection has closed.
      await done;
      server.off('error', onListenError);
    })();
    return closed;
  };
  const onAbort = (): void => {
    void close();
  };
  if (options.signal?.aborted) {
    await close();
    options.signal.throwIfAborted();
  }
  options.signal?.addEventListener('abort', onAbort, { once: true });
  const a = server.address() as net.AddressInfo;
  return {
    address: { address: normaliseAddress(a.address) ?? a.address, port: a.port },
    get stats() {
      return core.stats;
    },
    close,
  };
}
