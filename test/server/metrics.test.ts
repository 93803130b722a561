/**
 * The metrics endpoint through real sockets: a server on loopback, real traffic (STUN, two real punch()
 * peers, junk, a wrong secret, replays, TCP), and the counters read back over HTTP as Prometheus would.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import http from 'node:http';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { encodeMessage, type BurrowMessage } from '../../src/codec/messages.js';
import { deriveNetworkKeys } from '../../src/crypto/keys.js';
import { BurrowError, punch, startServer, stunQuery } from '../../src/index.js';
import { httpGet, scrape } from '../support/scrape.js';

const SECRET = 'metrics secret';
const KEYS = deriveNetworkKeys(Buffer.from(SECRET));
const WRONG = deriveNetworkKeys(Buffer.from('not the secret'));

const handles = () => process.getActiveResourcesInfo().filter((r) => ['UDPWrap', 'TCPServerWrap', 'TCPSocketWrap', 'Timeout'].includes(r));

let tx = 0;
function txid(): Buffer {
  const b = Buffer.alloc(12, 0x5a);
  b.writeUInt32BE(++tx, 8);
  return b;
}

function register(name: string, keys = KEYS, nonce = 7): Buffer {
  const msg: BurrowMessage = {
    kind: 'register', txid: txid(), networkId: keys.networkId, name, target: 'nobody', sessionNonce: Buffer.alloc(16, nonce),
    timestamp: Date.now(), candidates: [], mapping: 'unknown',
  };
  return encodeMessage(msg, { key: keys.clientToServer });
}

function report(name: string, outcome: 'connected' | 'failed', nonce = 7): Buffer {
  const msg: BurrowMessage = { kind: 'report', txid: txid(), networkId: KEYS.networkId, name, sessionNonce: Buffer.alloc(16, nonce), timestamp: Date.now(), outcome };
  return encodeMessage(msg, { key: KEYS.clientToServer });
}

/** The change of every sample between two scrapes (a sample absent before counts from 0). */
function delta(before: Map<string, number>, now: Map<string, number>): (key: string) => number {
  return (key) => (now.get(key) ?? NaN) - (before.get(key) ?? 0);
}

/** Scrapes until `done` holds for the samples, at most ~3 s; returns the last scrape. */
async function scrapeUntil(url: string, done: (m: Map<string, number>) => boolean): Promise<Map<string, number>> {
  let m = await scrape(url);
  for (let i = 0; i < 60 && !done(m); i++) {
    await new Promise((r) => setTimeout(r, 50));
    m = await scrape(url);
  }
  return m;
}

describe('metrics endpoint (loopback, real traffic)', () => {
  const before = handles().length;
  after(async () => {
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(handles().length, before, `leaked: ${handles().join(', ')}`);
  });

  it('counts STUN, registrations, introductions, outcomes, junk, bad auth, replays and bytes by transport', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], metrics: { listen: '127.0.0.1:0' } });
    const udp = dgram.createSocket('udp4');
    try {
      assert.ok(server.metricsAddress);
      assert.equal(server.metricsAddress.address, '127.0.0.1');
      const url = `http://127.0.0.1:${server.metricsAddress.port}/metrics`;
      const addr = `127.0.0.1:${server.address.port}`;
      const m0 = await scrape(url);
      assert.equal(m0.get('burrow_registrations'), 0);
      assert.equal(m0.get('burrow_networks'), 1);
      assert.equal(m0.get('burrow_stun_binding_requests_total'), 0);
      for (const name of [
        'burrow_store_errors_total', 'burrow_store_busy_drops_total', 'burrow_introductions_partner_gone_total', 'burrow_registrations_displaced_total',
        'burrow_registrations_refused_total', 'burrow_withdrawals_total', 'burrow_partners_told_left_total',
      ]) assert.equal(m0.get(name), 0, name);

      // A STUN Binding request.
      await stunQuery({ server: addr, local: '127.0.0.1:0', timeoutMs: 3000 });
      const m1 = await scrape(url);
      assert.equal(delta(m0, m1)('burrow_stun_binding_requests_total'), 1);

      // Two real peers: a registration each, an introduction, a NAT-mapping Binding each, and an
      // outcome report each, which also ends their registrations.
      const [a, b] = await Promise.all([
        punch({ server: addr, secret: SECRET, name: 'alice', peer: 'bob', local: '127.0.0.1:0', timeoutMs: 5000 }),
        punch({ server: addr, secret: SECRET, name: 'bob', peer: 'alice', local: '127.0.0.1:0', timeoutMs: 5000 }),
      ]);
      assert.equal(a.remotePort, b.localPort);
      const m2 = await scrapeUntil(url, (m) => delta(m1, m)('burrow_introduction_outcomes_total{outcome="connected"}') >= 2);
      const d2 = delta(m1, m2);
      assert.equal(d2('burrow_introduction_outcomes_total{outcome="connected"}'), 2);
      assert.equal(d2('burrow_introduction_outcomes_total{outcome="failed"}'), 0);
      assert.equal(d2('burrow_registrations_total'), 2);
      assert.ok(d2('burrow_register_requests_total') >= 2);
      assert.ok(d2('burrow_introductions_total') >= 1, 'introduced');
      assert.equal(d2('burrow_stun_binding_requests_total'), 2, 'one NAT-mapping Binding per peer');
      assert.equal(m2.get('burrow_registrations'), 0, 'the outcome reports ended both registrations');
      assert.equal(d2('burrow_auth_failures_total'), 0);
      assert.equal(d2('burrow_malformed_packets_total'), 0);
      assert.equal(d2('burrow_withdrawals_total'), 0, 'connected peers withdraw as connected');

      // A peer that gives up without a partner withdraws (burrow_withdrawals_total), and its name is free at once.
      await assert.rejects(punch({ server: addr, secret: SECRET, name: 'lonely', peer: 'nobody', local: '127.0.0.1:0', timeoutMs: 300 }));
      const mw = await scrapeUntil(url, (m) => delta(m2, m)('burrow_withdrawals_total') >= 1);
      assert.equal(delta(m2, mw)('burrow_withdrawals_total'), 1);
      assert.equal(mw.get('burrow_registrations'), 0);

      // Crafted traffic from one socket: junk, a REGISTER under the wrong secret, a REGISTER and an
      // outcome report each sent twice (the copies are replays), and a report for no registration.
      await new Promise<void>((resolve) => udp.bind(0, '127.0.0.1', resolve));
      let answers = 0;
      let answerBytes = 0;
      udp.on('message', (msg) => {
        answers++;
        answerBytes += msg.length;
      });
      const junk = [Buffer.from('hello'), Buffer.alloc(20), Buffer.alloc(0), Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.alloc(300, 0xff)];
      const reg = register('mallory');
      const rep = report('mallory', 'failed');
      const crafted = [...junk, register('eve', WRONG), reg, reg, rep, rep, report('mallory', 'connected', 9)];
      let sentBytes = 0;
      for (const d of crafted) {
        sentBytes += d.length;
        await new Promise<void>((resolve, reject) => {
          udp.send(d, server.address.port, '127.0.0.1', (err) => {
            if (err) reject(err);
            else resolve();
          });
        });
        await new Promise((r) => setTimeout(r, 5)); // in order: the report after its registration
      }
      const m3 = await scrapeUntil(url, (m) => delta(mw, m)('burrow_outcome_reports_unmatched_total') >= 1 && answers >= 2);
      const d3 = delta(mw, m3);
      assert.equal(d3('burrow_malformed_packets_total'), junk.length);
      assert.equal(d3('burrow_auth_failures_total'), 1);
      assert.equal(d3('burrow_replays_rejected_total'), 2);
      assert.equal(d3('burrow_registrations_total'), 1);
      assert.equal(d3('burrow_register_requests_total'), 1);
      assert.equal(d3('burrow_introduction_outcomes_total{outcome="failed"}'), 1);
      assert.equal(d3('burrow_introduction_outcomes_total{outcome="connected"}'), 0);
      assert.equal(d3('burrow_outcome_reports_unmatched_total'), 1);
      assert.equal(m3.get('burrow_registrations'), 0);
      assert.equal(d3('burrow_received_messages_total{transport="udp"}'), crafted.length);
      assert.equal(d3('burrow_received_bytes_total{transport="udp"}'), sentBytes);
      // Answered: the 401 to the wrong secret and the REGISTER answer; nothing else.
      assert.equal(answers, 2);
      assert.equal(d3('burrow_sent_messages_total{transport="udp"}'), 2);
      assert.equal(d3('burrow_sent_bytes_total{transport="udp"}'), answerBytes);
      assert.equal(d3('burrow_received_bytes_total{transport="tcp"}'), 0);

      // A bare STUN Binding over TCP: 20 bytes in, 32 out (XOR-MAPPED-ADDRESS for IPv4).
      const reply = await new Promise<Buffer>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port: server.address.port }, () => {
          const bare = Buffer.alloc(20);
          bare.writeUInt16BE(0x0001, 0);
          bare.writeUInt32BE(0x2112a442, 4);
          txid().copy(bare, 8);
          s.write(bare);
        });
        s.once('data', (d: Buffer) => {
          s.destroy();
          resolve(d);
        });
        s.on('error', reject);
      });
      assert.equal(reply.length, 32);
      const m4 = await scrapeUntil(url, (m) => m.get('burrow_tcp_connections') === 0);
      const d4 = delta(m3, m4);
      assert.equal(d4('burrow_stun_binding_requests_total'), 1);
      assert.equal(d4('burrow_received_messages_total{transport="tcp"}'), 1);
      assert.equal(d4('burrow_received_bytes_total{transport="tcp"}'), 20);
      assert.equal(d4('burrow_sent_messages_total{transport="tcp"}'), 1);
      assert.equal(d4('burrow_sent_bytes_total{transport="tcp"}'), 32);
      assert.equal(d4('burrow_received_bytes_total{transport="udp"}'), 0);
      // The metrics agree with the library's own counters.
      assert.equal(m4.get('burrow_introductions_total'), server.stats.introductions);
      assert.equal(m4.get('burrow_received_bytes_total{transport="udp"}')! + m4.get('burrow_received_bytes_total{transport="tcp"}')!, server.stats.bytesIn);

      // Process metrics are the CLI's business (createProcessRegistry); the library adds only its own.
      assert.equal(m4.has('burrow_process_cpu_seconds_total'), false);
    } finally {
      udp.close();
      await server.close();
    }
  });

  it('answers only GET and HEAD at /metrics, and stops listening with the server', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternatePort: false, metrics: { listen: '127.0.0.1:0' } });
    const base = `http://127.0.0.1:${server.metricsAddress!.port}`;
    try {
      assert.equal((await httpGet(`${base}/`)).status, 404);
      assert.equal((await httpGet(`${base}/metrics`, 'POST')).status, 405);
      const head = await httpGet(`${base}/metrics`, 'HEAD');
      assert.equal(head.status, 200);
      assert.equal(head.body, '');
      assert.equal((await httpGet(`${base}/metrics?x=1`)).status, 200);
    } finally {
      await server.close();
    }
    await assert.rejects(httpGet(`${base}/metrics`), /ECONNREFUSED/);
  });

  it('refuses a bad address before binding anything, and releases everything when the port is taken', async () => {
    for (const listen of ['localhost:9464', '9464', '127.0.0.1', '127.0.0.1:70000']) {
      await assert.rejects(
        startServer({ listen: '127.0.0.1:0', secrets: [SECRET], metrics: { listen } }),
        (e: unknown) => e instanceof BurrowError && e.code === 'INVALID_OPTION' && e.details.option === 'metrics' && e.details.value === listen,
      );
    }
    const taken = http.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    try {
      const port = (taken.address() as net.AddressInfo).port;
      await assert.rejects(
        startServer({ listen: '127.0.0.1:0', secrets: [SECRET], metrics: { listen: `127.0.0.1:${port}` } }),
        (e: unknown) => e instanceof BurrowError && e.code === 'BIND_FAILED' && e.details.role === 'metrics' && /EADDRINUSE/.test(e.message),
      );
    } finally {
      await new Promise((r) => taken.close(r));
    }
  });
});
