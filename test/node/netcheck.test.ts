/**
 * `netcheck()` and `burrow netcheck` through real sockets on loopback, against a 2-IP `burrow serve --alt-address`
 * (127.0.0.1 and 127.0.0.2) and a 1-IP one: no NAT on loopback, so the answer is always "no NAT"; what is checked is
 * that every test runs over real sockets, the server's four sockets answer from where they say, and nothing leaks.
 */
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { BurrowError, netcheck, punch, startServer } from '../../src/index.js';
import { runCli, startServe } from '../support/cli.js';

const SECRET = 'netcheck loopback secret';

describe('netcheck over loopback (real sockets)', () => {
  const leaked = () => process.getActiveResourcesInfo().filter((r) => r === 'UDPWrap' || r === 'Timeout');
  const before = leaked().length;
  after(async () => {
    // uv handles finish closing on the next turns of the loop.
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    assert.equal(leaked().length, before, `leaked: ${leaked().join(', ')}`);
  });

  it('against a 2-IP server: no NAT, endpoint-independent filtering, hairpinning, OTHER-ADDRESS on the second IP', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '127.0.0.2', tcp: false });
    try {
      assert.ok(server.rfc5780);
      assert.equal(server.rfc5780['other-ip'].address, '127.0.0.2');
      assert.equal(server.rfc5780['other-ip'].port, server.address.port);
      assert.equal(server.rfc5780['other-ip-port'].port, server.alternateAddress?.port);
      const events: string[] = [];
      const r = await netcheck({ server: `127.0.0.1:${server.address.port}`, onEvent: (e) => events.push(`${e.name}:${e.answered}`) });
      assert.equal(r.udp, true);
      assert.equal(r.mapping, 'no-nat');
      assert.equal(r.filtering, 'endpoint-independent');
      assert.equal(r.hairpinning, true);
      assert.deepEqual(r.otherAddress, server.rfc5780['other-ip-port']);
      assert.deepEqual(r.ipv4, r.local);
      assert.equal(r.verdict.line, 'direct to every kind of peer');
      // Each test was answered from the socket it asked for.
      const from = Object.fromEntries(r.tests.map((t) => [t.name, t.from]));
      assert.equal(from.II, `127.0.0.2:${server.address.port}`);
      assert.equal(from.III, `127.0.0.2:${server.alternateAddress?.port}`);
      assert.equal(from['filter-ip-port'], `127.0.0.2:${server.alternateAddress?.port}`);
      assert.ok(events.includes('I:true') && events.includes('filter-ip-port:true'));
      assert.ok(r.rttMs >= 0);
    } finally {
      await server.close();
    }
  });

  it('learns the public IPv6 address from --server6 when --server is IPv4', async () => {
    const v4 = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '127.0.0.2', tcp: false });
    const v6 = await startServer({ listen: '[::1]:0', secrets: [SECRET], tcp: false });
    try {
      const r = await netcheck({ server: `127.0.0.1:${v4.address.port}`, server6: `[::1]:${v6.address.port}` });
      assert.equal(r.ipv6Tested, true);
      assert.equal(r.ipv6?.address, '::1');
      assert.equal(r.mapping, 'no-nat');
    } finally {
      await Promise.all([v4.close(), v6.close()]);
    }
  });

  it('against a 1-IP server: mapping only, no OTHER-ADDRESS, filtering unknown', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], tcp: false });
    try {
      const r = await netcheck({ server: `127.0.0.1:${server.address.port}` });
      assert.equal(r.otherAddress, undefined);
      assert.equal(r.mapping, 'no-nat');
      assert.equal(r.filtering, 'unknown');
    } finally {
      await server.close();
    }
  });

  it('the binding lifetime on loopback outlives short trials (RESPONSE-PORT through real sockets)', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '127.0.0.2', tcp: false });
    try {
      const r = await netcheck({ server: `127.0.0.1:${server.address.port}`, lifetime: true, lifetimeTrialsMs: [100, 300] });
      assert.deepEqual(r.lifetime, { kind: 'estimate', aliveMs: 300, goneMs: undefined });
    } finally {
      await server.close();
    }
  });

  it('honours an AbortSignal', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '127.0.0.2', tcp: false });
    try {
      const controller = new AbortController();
      const p = netcheck({ server: `127.0.0.1:${server.address.port}`, lifetime: true, signal: controller.signal });
      setTimeout(() => { controller.abort(); }, 50);
      await assert.rejects(p, (e: unknown) => e instanceof BurrowError && e.code === 'ABORTED');
    } finally {
      await server.close();
    }
  });

  it('every connect tests its own filtering at registration when the server has a second IP', async () => {
    const server = await startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '127.0.0.2' });
    try {
      const findings: unknown[] = [];
      // A peer that never comes: the registration and its NAT tests run their course, then PEER_NOT_FOUND.
      const lonely = punch({ server: `127.0.0.1:${server.address.port}`, secret: SECRET, timeoutMs: 1500, name: 'nc-a', peer: 'nc-nobody', onEvent: (e) => { if (e.type === 'nat-mapping') findings.push(e); } });
      await assert.rejects(lonely, (e: unknown) => e instanceof BurrowError && e.code === 'PEER_NOT_FOUND');
      // Loopback: no NAT, so every port is kept and anyone may answer.
      assert.deepEqual(findings.at(-1), { type: 'nat-mapping', mapping: 'endpoint-independent', allocation: 'preserving', filtering: 'endpoint-independent' });
    } finally {
      await server.close();
    }
  });

  it('startServer refuses a second IP that cannot work, saying why', async () => {
    await assert.rejects(startServer({ listen: '0.0.0.0:0', secrets: [SECRET], alternateAddress: '127.0.0.2' }), (e: unknown) => e instanceof BurrowError && e.code === 'INVALID_OPTION' && /specific listen address/.test(e.message));
    await assert.rejects(startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '::1' }), (e: unknown) => e instanceof BurrowError && /same family/.test(e.message));
    await assert.rejects(startServer({ listen: '127.0.0.1:0', secrets: [SECRET], alternateAddress: '127.0.0.2', alternatePort: false }), (e: unknown) => e instanceof BurrowError && /2 IPs × 2 ports/.test(e.message));
  });
});

describe('burrow netcheck (CLI) over loopback', () => {
  it('prints a report and a verdict, and one JSON object with --format json', async () => {
    const serve = await startServe(SECRET, ['--alt-address', '127.0.0.2']);
    try {
      const text = await runCli(['netcheck', '--server', serve.address]);
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^Report \(server 127\.0\.0\.1:\d+, other address 127\.0\.0\.2:\d+\):/);
      assert.match(text.stdout, /Mapping: +none \(no NAT/);
      assert.match(text.stdout, /Filtering: +endpoint-independent/);
      assert.match(text.stdout, /^Verdict: direct to every kind of peer$/m);
      const json = await runCli(['netcheck', '--server', serve.address, '--format', 'json']);
      assert.equal(json.code, 0, json.stderr);
      const r = JSON.parse(json.stdout) as { mapping: string; filtering: string; verdict: { direct: string[] } };
      assert.equal(r.mapping, 'no-nat');
      assert.equal(r.filtering, 'endpoint-independent');
      assert.equal(r.verdict.direct.length, 5);
    } finally {
      await serve.stop();
    }
  });

  it('serve --alt-address refuses a wildcard --listen with exit 2', async () => {
    const r = await runCli(['serve', '--listen', '0.0.0.0:3478', '--alt-address', '127.0.0.2', '--secret', 'x', '--check']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /needs a specific --listen address/);
  });

  it('exits 1 with a reason when no STUN server answers', async () => {
    const r = await runCli(['netcheck', '--server', '127.0.0.1:9', '--format', 'json']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /SERVER_UNREACHABLE|UDP may be blocked/);
  });
});
