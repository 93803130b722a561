#!/usr/bin/env node
/**
 * The `burrow` command: parses the subcommand, runs it, and turns errors into the documented exit codes.
 * Commands are loaded lazily so each starts only what it needs. The installed binary is this file
 * bundled with the punch, stun and keygen paths into one CommonJS file (dist/src/cli/burrow.cjs,
 * `npm run bundle`): Node's ESM loader costs several milliseconds per module on a slow machine, and a
 * punch should not wait for it. serve, demo and lab stay ES modules, imported on demand.
 */
import { BurrowError, ExitCode, isBurrowError } from '../errors.js';
import type { Io } from './common.js';

/** The CLI's streams; stdin is only read by commands that forward it. */
export interface MainIo extends Io {
  readonly stdin?: NodeJS.ReadableStream;
}

const HELP = `burrow: connect machines behind NATs through a rendezvous server

Usage:
  burrow punch --server HOST:PORT --secret-file FILE --as NAME --to NAME
               [--local [ADDR:]PORT] [--timeout SECONDS] [--format text|env|json] [-- COMMAND ARGS...]
  burrow serve [--listen HOST:PORT] --secret-file FILE [--alt-port PORT | --no-alt-port]
               [--tstun [[HOST:]PORT]] [--metrics HOST:PORT] [--workers N] [--log-format text|json]
               [--log-level debug|info|warn] [--check]
  burrow pipe --server HOST:PORT --secret-file FILE --as NAME --to NAME [--send-only | --recv-only]
               [--timeout SECONDS]      stdin to the peer, the peer to stdout, over encrypted TCP
  burrow send FILE|DIR|-... [--name NAME] --server HOST:PORT --secret-file FILE --as NAME --to NAME
              [--timeout SECONDS]      files, directory trees or stdin (-, named NAME)
  burrow receive --server HOST:PORT --secret-file FILE --as NAME --to NAME [--out DIR] [--yes]
                 [--force] [--timeout SECONDS]      shows the offer and asks (--yes: accept without
                              asking; required when stdin is not a terminal); verified end to end;
                              an interrupted transfer resumes when both sides run again
  burrow wg --interface IFACE --server HOST:PORT --secret-file FILE [--continuous]
            [--interval SECONDS] [--timeout SECONDS] [--format text|json]
                              find and set the endpoints of a WireGuard interface's peers
  burrow stun HOST:PORT [--local [ADDR:]PORT] [--format text|json]
  burrow keygen
  burrow demo                 a server and two peers on loopback (and across emulated NATs as root)
  burrow lab punch --a KIND --b KIND [--same-nat] [--timeout SECONDS]
                              run a punch across emulated NATs (root; KIND: full-cone,
                              address-restricted, port-restricted, symmetric, firewall)

Secrets come from --secret-file (first line; the server accepts every line), BURROW_SECRET, or --secret.
Default server port: 3478/udp (and 3479/udp for NAT mapping tests).

Exit codes: 0 connected, 1 other error, 2 usage or configuration, 3 authentication failed (secret
differs from the server's), 4 peer did not appear before the timeout, 5 peer found but no direct path,
6 stream broken before everything was delivered, 7 stream aborted: data failed authentication.
wg also: 4 a peer never registered, 5 a peer (or this host) is behind a per-destination (symmetric)
NAT, 8 endpoint set but no handshake, 9 the interface's only peer is the rendezvous server,
10 no such interface, 11 the \`wg\` tool is missing, 12 WireGuard's packets never reach the server.
send/receive also: 2 when a file of that name exists on the receiving side (use --force or --out),
1 when a file could not be read or written, or the transfer was interrupted.
With -- COMMAND, burrow exits with COMMAND's status.
`;

export async function main(argv: string[], io: MainIo): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.stdout.write(HELP);
        return command === undefined ? ExitCode.USAGE : ExitCode.OK;
      case '--version':
        io.stdout.write('burrow 0.1.0\n');
        return ExitCode.OK;
      case 'punch':
        return await (await import('./punch.js')).runPunch(rest, io);
      case 'serve':
        return await (await import('./serve.js')).runServe(rest, io);
      case 'send':
        return await (await import('./send.js')).runSend(rest, { ...io, stdin: io.stdin ?? process.stdin });
      case 'receive':
        return await (await import('./receive.js')).runReceive(rest, { ...io, stdin: io.stdin ?? process.stdin });
      case 'pipe':
        return await (await import('./pipe.js')).runPipe(rest, { ...io, stdin: io.stdin ?? process.stdin });
      case 'stun':
        return await (await import('./stun.js')).runStun(rest, io);
      case 'wg':
        return await (await import('./wg.js')).runWg(rest, io);
      case 'keygen':
        io.stdout.write(`${(await import('../node/secret.js')).generateSecret()}\n`);
        return ExitCode.OK;
      case 'demo':
        return await (await import('./demo.js')).runDemo(rest, io);
      case 'lab':
        return await (await import('./lab.js')).runLab(rest, io);
      default:
        throw BurrowError.usage(`unknown command "${command}"`);
    }
  } catch (err) {
    return report(err, io);
  }
}

function report(err: unknown, io: Io): number {
  if (isBurrowError(err)) {
    io.stderr.write(`burrow: error: ${err.message}\n`);
    return err.exitCode;
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) {
    io.stderr.write(`burrow: error: ${(err as Error).message}; run \`burrow --help\` for the options.\n`);
    return ExitCode.USAGE;
  }
  io.stderr.write(`burrow: internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n` +
    'This is a bug in burrow; please report it with the command you ran.\n');
  return ExitCode.OTHER;
}

// Run when executed as the `burrow` binary (not when imported by tests).
const invoked = process.argv[1] ?? '';
if (/(?:^|[\\/])(?:main\.js|burrow(?:\.cjs)?)$/.test(invoked)) {
  // Until main() returns, a drained event loop means something never finished: that is not success.
  process.exitCode = 1;
  const controller = new AbortController();
  const stop = (): void => {
    controller.abort();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  void main(process.argv.slice(2), { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env, signal: controller.signal }).then((code) => {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    process.exitCode = code;
  });
}
