/** `burrow serve`: the rendezvous server, with structured logs, clean shutdown and secret reload. */
import { parseArgs } from 'node:util';
import { endpointKey } from '../codec/address.js';
import { BurrowError } from '../errors.js';
import { readSecretFile } from '../node/secret.js';
import { startServer } from '../node/server.js';
import type { ServerEvent } from '../server/core.js';
import { oneOf, resolveSecrets, type Io } from './common.js';

export const SERVE_USAGE = `burrow serve [--listen HOST:PORT] --secret-file FILE [--alt-port PORT | --no-alt-port]
             [--log-format text|json] [--log-level debug|info|warn]`;

export async function runServe(argv: string[], io: Io): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      listen: { type: 'string' },
      'secret-file': { type: 'string' },
      secret: { type: 'string' },
      'alt-port': { type: 'string' },
      'no-alt-port': { type: 'boolean' },
      'log-format': { type: 'string' },
      'log-level': { type: 'string' },
    },
    strict: true,
  });
  const format = oneOf('--log-format', values['log-format'], ['text', 'json'] as const, 'text');
  const level = oneOf('--log-level', values['log-level'], ['debug', 'info', 'warn'] as const, 'info');
  let alternatePort: number | false | undefined;
  if (values['no-alt-port'] === true) alternatePort = false;
  else if (values['alt-port'] !== undefined) {
    alternatePort = Number(values['alt-port']);
    if (!Number.isInteger(alternatePort) || alternatePort < 0 || alternatePort > 65535) {
      throw BurrowError.usage(`--alt-port "${values['alt-port']}" is not a port number`);
    }
  }
  const secrets = await resolveSecrets(io, values);
  // pino is loaded here only, so `burrow punch` starts fast.
  const { pino } = await import('pino');
  const destination = format === 'json' ? pino.destination({ dest: 2, sync: true }) : (await import('pino-pretty')).default({ destination: 2, sync: true, colorize: false, translateTime: 'SYS:standard', ignore: 'pid,hostname' });
  const log = pino({ level, base: { pid: process.pid } }, destination);
  const onEvent = (e: ServerEvent): void => {
    switch (e.type) {
      case 'registered':
        if (e.isNew) log.info({ event: e.type, network: e.network, peer: e.name, from: endpointKey(e.from) }, 'peer registered');
        else log.debug({ event: e.type, network: e.network, peer: e.name, from: endpointKey(e.from) }, 'registration refreshed');
        break;
      case 'introduced':
        log.info({ event: e.type, network: e.network, a: e.a, b: e.b }, 'peers introduced');
        break;
      case 'rejected':
        log.debug({ event: e.type, from: endpointKey(e.from), reason: e.reason }, 'datagram rejected');
        break;
    }
  };
  const server = await startServer({
    ...(values.listen !== undefined ? { listen: values.listen } : {}),
    secrets,
    ...(alternatePort !== undefined ? { alternatePort } : {}),
    onEvent,
  });
  log.info(
    {
      event: 'listening',
      udp: endpointKey(server.address),
      alternateUdp: server.alternateAddress ? endpointKey(server.alternateAddress) : null,
      networks: secrets.length,
    },
    'listening',
  );
  const secretFile = values['secret-file'];
  const onHup = (): void => {
    if (secretFile === undefined) {
      log.warn({ event: 'reload' }, 'SIGHUP ignored: secrets came from the command line or environment, not a file');
      return;
    }
    readSecretFile(secretFile).then(
      (next) => {
        server.setSecrets(next);
        log.info({ event: 'reload', networks: next.length }, 'secret file reloaded');
      },
      (err: unknown) => {
        log.warn({ event: 'reload', error: err instanceof Error ? err.message : String(err) }, 'secret reload failed; keeping the old secrets');
      },
    );
  };
  process.on('SIGHUP', onHup);
  await new Promise<void>((resolve) => {
    if (io.signal.aborted) resolve();
    io.signal.addEventListener('abort', () => {
      resolve();
    }, { once: true });
  });
  process.off('SIGHUP', onHup);
  await server.close();
  const s = server.stats;
  log.info({ event: 'stopped', registrationsTotal: s.registrationsTotal, introductions: s.introductions, stunBindings: s.stunBindings }, 'stopped');
  return 0;
}
