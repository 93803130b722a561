/**
 * The built-in relay against coturn's TURN client: `turnutils_uclient` allocates on `burrow serve`'s main port with
 * credentials derived from the network secret (src/codec/turn.ts), creates a permission and a channel for its
 * partner's address, and relays datagrams to `turnutils_peer` and back, by ChannelData and by Send indications.
 * The partner ("bob") is registered from 127.0.0.1 targeting "alice", so 127.0.0.1 is the partner's address.
 * And the refusals: wrong credentials, and a partner that is not introduced, get no relay.
 * CI installs coturn and must run these; elsewhere they are skipped with a message if it is missing.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { after, before, describe, it } from 'node:test';
import { coturnGate, hasProgram } from '../support/coturn.js';
import { decodeMessage, encodeMessage, type RelayOffer } from '../../src/codec/messages.js';
import { builtinCredentials } from '../../src/codec/turn.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { startServer, type RendezvousServer } from '../../src/node/server.js';

const { available, skip } = coturnGate('turnutils_uclient', 'turnutils_peer');

const SECRET = 'relay interop secret';
const keys = deriveNetworkKeys(Buffer.from(SECRET));

/** Registers `name` (targeting `target`) with the server from 127.0.0.1, as a Burrow peer would. */
async function register(server: RendezvousServer, name: string, target: string): Promise<dgram.Socket> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const msg = encodeMessage({ kind: 'register', txid: randomBytes(12), networkId: keys.networkId, name, target, sessionNonce: randomBytes(16), timestamp: Date.now(), candidates: [], mapping: 'unknown' }, { key: keys.clientToServer });
  const answered = new Promise<void>((resolve) => socket.once('message', () => { resolve(); }));
  socket.send(msg, server.address.port, '127.0.0.1');
  await answered;
  return socket;
}

function uclient(args: string[]): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile('turnutils_uclient', args, { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout + stderr });
    });
  });
}

describe('built-in relay interop with coturn’s turnutils_uclient', { skip }, () => {
  let server: RendezvousServer;
  let peer: ChildProcess;
  let bob: dgram.Socket;
  const peerPort = 30000 + Math.floor(Math.random() * 20000);

  before(async () => {
    // turnutils_uclient makes two allocations per run and leaves them to expire: room for every run here. Its first
    // Allocate is bare (shorter than the 401 challenge), so the server answers it only with --relay-open-challenge.
    server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, relay: { openChallenge: true, limits: { sessionsPerPeer: 64, sessionsPerSource: 64 } } });
    peer = spawn('turnutils_peer', ['-L', '127.0.0.1', '-p', String(peerPort)], { stdio: 'ignore' });
    bob = await register(server, 'bob', 'alice');
    await new Promise((r) => setTimeout(r, 300)); // turnutils_peer binds
  });

  after(async () => {
    peer.kill('SIGTERM');
    bob.close();
    await server.close();
  });

  const creds = (name: string, peerName: string): { username: string; password: string } =>
    builtinCredentials(keys.relay, { expiry: Math.floor(Date.now() / 1000) + 600, networkIdHex: keys.networkIdHex, name, peer: peerName });

  for (const [label, flags] of [['ChannelData', []], ['Send indications', ['-s']]] as const) {
    it(`relays to the partner’s address and back (${label})`, async () => {
      const { username, password } = creds('alice', 'bob');
      const before = server.relay?.stats.bytesRelayed ?? 0;
      const r = await uclient([...flags, '-c', '-n', '50', '-l', '500', '-z', '5', '-u', username, '-w', password, '-e', '127.0.0.1', '-r', String(peerPort), '-p', String(server.address.port), '127.0.0.1']);
      assert.equal(r.code, 0, r.out);
      // uclient prints e.g. "Total lost packets 0 (0.000000%)" and "Total transmit time ...".
      assert.match(r.out, /start_mclient: tot_send_msgs=50, tot_recv_msgs=50/, r.out);
      assert.match(r.out, /Total lost packets 0 /, r.out);
      assert.ok((server.relay?.stats.bytesRelayed ?? 0) - before >= 2 * 50 * 500, 'the relay counted the bytes');
    });
  }

  it('refuses wrong credentials', async () => {
    const { username } = creds('alice', 'bob');
    const r = await uclient(['-c', '-n', '3', '-u', username, '-w', 'not the password', '-e', '127.0.0.1', '-r', String(peerPort), '-p', String(server.address.port), '127.0.0.1']);
    assert.notEqual(r.code, 0, r.out);
    assert.ok((server.relay?.stats.refused['bad-credentials'] ?? 0) > 0);
  });

  it('forbids a permission for anyone but the introduced partner', async () => {
    // carol never registered targeting alice: 127.0.0.1 is nobody's partner address for alice→carol.
    const { username, password } = creds('alice', 'carol');
    const forbidden = server.relay?.stats.permissionsForbidden ?? 0;
    const r = await uclient(['-c', '-n', '3', '-u', username, '-w', password, '-e', '127.0.0.1', '-r', String(peerPort), '-p', String(server.address.port), '127.0.0.1']);
    assert.notEqual(r.code === 0 && /tot_recv_msgs=3/.test(r.out), true, r.out);
    assert.ok((server.relay?.stats.permissionsForbidden ?? 0) > forbidden, r.out);
  });
});

/** Registers `name` → `target` and returns the relay offer of the introduction in the answer (the partner is there). */
async function offerFor(server: RendezvousServer, name: string, target: string, sockets: dgram.Socket[]): Promise<RelayOffer | undefined> {
  const socket = dgram.createSocket('udp4');
  sockets.push(socket);
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
  const msg = encodeMessage({ kind: 'register', txid: randomBytes(12), networkId: keys.networkId, name, target, sessionNonce: randomBytes(16), timestamp: Date.now(), candidates: [], mapping: 'unknown' }, { key: keys.clientToServer });
  const answer = new Promise<Buffer>((resolve) => socket.once('message', (m) => { resolve(m); }));
  socket.send(msg, server.address.port, '127.0.0.1');
  const d = decodeMessage(await answer, { relayOfferKey: keys.relayOffer });
  assert.ok(d.ok && d.msg.kind === 'register-ok', d.ok ? d.msg.kind : d.reason);
  return d.msg.intro?.relay;
}

describe('coturn as the relay fleet: serve --turn mints TURN REST credentials that coturn accepts', { skip: hasProgram('turnserver') && available ? false : skip }, () => {
  it('the introduction carries a sealed TURN offer; turnutils_uclient relays through coturn with it', async () => {
    const turnSecret = randomBytes(16).toString('hex');
    const turnPort = 30000 + Math.floor(Math.random() * 20000);
    const peerPort = turnPort + 1;
    const turn = spawn('turnserver', ['-n', '--listening-ip', '127.0.0.1', '--relay-ip', '127.0.0.1', '--listening-port', String(turnPort), '--realm', 'burrow',
      '--use-auth-secret', '--static-auth-secret', turnSecret, '--no-tls', '--no-dtls', '--no-cli', '--allow-loopback-peers', '--log-file', 'stdout', '--simple-log'], { stdio: 'ignore' });
    const peer = spawn('turnutils_peer', ['-L', '127.0.0.1', '-p', String(peerPort)], { stdio: 'ignore' });
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, relay: { policy: { kind: 'turn', url: `turn:127.0.0.1:${turnPort}`, secret: Buffer.from(turnSecret), ttlSeconds: 600 } } });
    const sockets: dgram.Socket[] = [];
    try {
      await offerFor(server, 'bob', 'alice', sockets);
      const offer = await offerFor(server, 'alice', 'bob', sockets);
      assert.ok(offer?.kind === 'turn', JSON.stringify(offer));
      assert.equal(offer.url, `turn:127.0.0.1:${turnPort}`);
      assert.match(offer.username, /^\d+:alice$/);
      assert.ok(Math.abs(offer.expiry - (Date.now() / 1000 + 600)) < 5);
      // The built-in relay is off with --turn: an Allocate to burrow serve gets 403.
      const { username, password } = builtinCredentials(keys.relay, { expiry: Math.floor(Date.now() / 1000) + 60, networkIdHex: keys.networkIdHex, name: 'alice', peer: 'bob' });
      const builtin = await uclient(['-c', '-n', '1', '-u', username, '-w', password, '-e', '127.0.0.1', '-r', String(peerPort), '-p', String(server.address.port), '127.0.0.1']);
      assert.notEqual(builtin.code, 0);
      assert.ok((server.relay?.stats.refused.disabled ?? 0) > 0);
      // coturn takes the minted credentials (retry while it starts).
      let r = { code: 1, out: '' };
      for (let i = 0; i < 20 && r.code !== 0; i++) {
        r = await uclient(['-c', '-n', '20', '-l', '200', '-z', '5', '-u', offer.username, '-w', offer.password, '-e', '127.0.0.1', '-r', String(peerPort), '-p', String(turnPort), '127.0.0.1']);
        if (r.code !== 0) await new Promise((res) => setTimeout(res, 250));
      }
      assert.equal(r.code, 0, r.out);
      assert.match(r.out, /tot_send_msgs=20, tot_recv_msgs=20/, r.out);
      // And a password that was not minted with coturn's secret is refused by coturn.
      const bad = await uclient(['-c', '-n', '1', '-u', offer.username, '-w', 'AAAAAAAAAAAAAAAAAAAAAAAAAAA=', '-e', '127.0.0.1', '-r', String(peerPort), '-p', String(turnPort), '127.0.0.1']);
      assert.notEqual(bad.code, 0);
    } finally {
      for (const s of sockets) s.close();
      turn.kill('SIGTERM');
      peer.kill('SIGTERM');
      await server.close();
    }
  });

  it('the built-in server offers "builtin", and --no-relay offers "none"', async () => {
    for (const [policy, kind] of [[undefined, 'builtin'], [{ kind: 'none' as const }, 'none']] as const) {
      const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, tcp: false, ...(policy ? { relay: { policy } } : {}) });
      const sockets: dgram.Socket[] = [];
      try {
        await offerFor(server, 'bob', 'alice', sockets);
        assert.deepEqual(await offerFor(server, 'alice', 'bob', sockets), { kind });
      } finally {
        for (const s of sockets) s.close();
        await server.close();
      }
    }
  });
});
