#!/usr/bin/env node
// Builds the optional burrow_udp addon (native/udp_batch.c: a UDP socket that moves datagrams in batches with
// recvmmsg/sendmmsg, for the rendezvous server's main port). Run by `npm ci`/`npm install` (the "install" script).
// Not fatal: without the addon `burrow serve` uses Node's dgram socket, which is slower for STUN under load
// (src/node/datagram-port.ts). Set BURROW_SKIP_NATIVE=1 to skip the build.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';

const note = (text) => process.stderr.write(`burrow: ${text}\n`);

if (process.env.BURROW_SKIP_NATIVE === '1') {
  note('BURROW_SKIP_NATIVE=1: not building the native UDP addon; the server will use Node\'s dgram socket.');
  process.exit(0);
}
if (process.platform !== 'linux') {
  note(`the native UDP addon is for Linux (recvmmsg/sendmmsg); on ${process.platform} the server uses Node's dgram socket.`);
  process.exit(0);
}
// npm tells lifecycle scripts where its own node-gyp is; outside npm, look next to this Node.
const candidates = [
  process.env.npm_config_node_gyp,
  join(dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter((p) => p && existsSync(p));
const gyp = candidates[0];
if (!gyp) {
  note('node-gyp not found: the native UDP addon is not built; the server will use Node\'s dgram socket. Run `npm rebuild` from npm to build it.');
  process.exit(0);
}
const r = spawnSync(process.execPath, [gyp, 'rebuild', '--loglevel=warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
if (r.status !== 0) {
  note('could not build the native UDP addon (see above); `burrow serve` will use Node\'s dgram socket, which answers STUN');
  note('more slowly. Install python3, make and a C compiler, then run `npm rebuild` to build it.');
}
process.exit(0);
