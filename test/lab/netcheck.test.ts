/**
 * `burrow netcheck` classifies every lab NAT kind (src/lab/nat-rules.ts) right against a 2-IP `burrow serve
 * --alt-address` in the lab's internet namespace (203.0.113.1 and .2), and coturn's `turnutils_natdiscovery -m -f`
 * (plain, unpadded requests) agrees with it against the same server, and netcheck against coturn's turnserver with two
 * listening IPs classifies the same. The binding lifetime estimate is checked
 * against a router whose conntrack UDP timeouts are cut to 3 s.
 */
import assert from 'node:assert/strict';
import { accessSync, constants } from 'node:fs';
import { describe, it } from 'node:test';
import type { NatKind } from '../../src/lab/nat-rules.js';
import { createLab, type Lab } from '../../src/lab/topology.js';
import { assertLabAvailable, assertNothingLeft, labSkip } from './gate.js';
import { CLI, peerEnv } from './peers.js';

const SERVER = '203.0.113.1:3478';
const SERVER6 = '[2001:db8::1]:3478';

interface Report {
  mapping: string;
  filtering: string;
  allocation: string;
  hairpinning: boolean | undefined;
  ipv4: { address: string; port: number };
  ipv6?: { address: string; port: number };
  local: { address: string; port: number };
  otherAddress?: { address: string; port: number };
  lifetime?: { kind: string; aliveMs?: number; goneMs?: number };
  verdict: { line: string; direct: string[]; relay: string[] };
  tests: unknown[];
}

const EXPECTED: Record<NatKind, { mapping: string; filtering: string; allocation?: string; hairpinning: boolean }> = {
  'full-cone': { mapping: 'endpoint-independent', filtering: 'endpoint-independent', hairpinning: false },
  'address-restricted': { mapping: 'endpoint-independent', filtering: 'address-dependent', hairpinning: false },
  'port-restricted': { mapping: 'endpoint-independent', filtering: 'address-and-port-dependent', allocation: 'preserving', hairpinning: false },
  symmetric: { mapping: 'address-and-port-dependent', filtering: 'address-and-port-dependent', allocation: 'random', hairpinning: false },
  firewall: { mapping: 'no-nat', filtering: 'address-and-port-dependent', hairpinning: true },
};

function hasNatdiscovery(program = 'turnutils_natdiscovery'): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => {
    try {
      accessSync(`${dir}/${program}`, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** coturn's verdict words, as netcheck names them. */
function coturnVerdict(out: string, kind: 'Mapping' | 'Filtering'): string | undefined {
  const m = new RegExp(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) ${kind}`).exec(out);
  return m?.[1]?.toLowerCase().replace(/ and /, '-and-').replace(/ /g, '-');
}

async function withServer<T>(lab: Lab, body: () => Promise<T>): Promise<T> {
  const server = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', SERVER, '--alt-address', '203.0.113.2', '--log-format', 'json'], { env: peerEnv('netcheck lab secret') });
  // IPv6 has no NAT in the lab (only firewalled): a second, plain server for the public IPv6 address.
  const server6 = lab.spawn('pub', process.execPath, [CLI, 'serve', '--listen', SERVER6, '--no-alt-port', '--log-format', 'json'], { env: peerEnv('netcheck lab secret') });
  await Promise.all([server.waitForOutput('stderr', '"listening"', 5000), server6.waitForOutput('stderr', '"listening"', 5000)]);
  return body();
}

async function netcheck(lab: Lab, extra: string[] = [], timeoutMs = 30_000, server = SERVER): Promise<Report> {
  const r = await lab.exec('hA', process.execPath, [CLI, 'netcheck', '--server', server, '--server6', SERVER6, '--format', 'json', ...extra], { timeoutMs });
  assert.equal(r.code, 0, `netcheck failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Report;
}

describe('burrow netcheck in the NAT lab, against a 2-IP burrow serve', { skip: labSkip }, () => {
  for (const kind of Object.keys(EXPECTED) as NatKind[]) {
    it(`classifies ${kind}; turnutils_natdiscovery agrees, and so does netcheck against coturn`, async () => {
      assertLabAvailable();
      const lab = await createLab({ a: kind, b: 'port-restricted', ipv6: true });
      try {
        await withServer(lab, async () => {
          const want = EXPECTED[kind];
          const r = await netcheck(lab);
          const detail = JSON.stringify(r.tests);
          assert.equal(r.mapping, want.mapping, `mapping (${detail})`);
          assert.equal(r.filtering, want.filtering, `filtering (${detail})`);
          if (want.allocation) assert.equal(r.allocation, want.allocation, `allocation (${detail})`);
          assert.equal(r.hairpinning, want.hairpinning, 'hairpinning (the lab\'s routers do not hairpin)');
          assert.deepEqual(r.otherAddress, { address: '203.0.113.2', port: 3479 });
          const publicIp = kind === 'firewall' ? lab.addresses.hosts.hA.v4 : lab.addresses.routers.natA.public.v4;
          assert.equal(r.ipv4.address, publicIp);
          assert.equal(r.ipv6?.address, lab.addresses.hosts.hA.v6, 'the public IPv6 address is the host\'s own');
          if (kind === 'symmetric') assert.deepEqual(r.verdict.relay, ['symmetric']);
          if (kind === 'full-cone') assert.equal(r.verdict.line, 'direct to every kind of peer');

          assert.ok((hasNatdiscovery() && hasNatdiscovery('turnserver')) || process.env.CI !== 'true', 'coturn must be installed in CI');
          if (!hasNatdiscovery() || !hasNatdiscovery('turnserver')) return;
          // Both at once (their own sockets, their own mappings): coturn's client against our server, and ours
          // against coturn's turnserver with two listening IPs (-c /dev/null: Debian's config says no-rfc5780).
          const theirs = lab.exec('hA', 'turnutils_natdiscovery', ['-m', '-f', '-p', '3478', '203.0.113.1'], { timeoutMs: 30_000 });
          lab.spawn('pub', 'turnserver', ['-c', '/dev/null', '--stun-only', '--listening-ip', '203.0.113.1', '--listening-ip', '203.0.113.2', '--listening-port', '3490', '--no-cli', '--log-file', 'stdout', '--simple-log', '--no-tls', '--no-dtls'], {});
          const againstCoturn = (async () => {
            let ready = await lab.exec('hA', process.execPath, [CLI, 'stun', '203.0.113.1:3490', '--timeout', '1']);
            for (let i = 0; i < 10 && ready.code !== 0; i++) ready = await lab.exec('hA', process.execPath, [CLI, 'stun', '203.0.113.1:3490', '--timeout', '1']);
            return netcheck(lab, [], 30_000, '203.0.113.1:3490');
          })();
          const [out, c] = await Promise.all([theirs, againstCoturn]);
          const text = out.stdout + out.stderr;
          // coturn never compares with the local address: no NAT shows as endpoint-independent mapping.
          assert.equal(coturnVerdict(text, 'Mapping'), r.mapping === 'no-nat' ? 'endpoint-independent' : r.mapping, text);
          assert.equal(coturnVerdict(text, 'Filtering'), r.filtering, text);
          assert.deepEqual(c.otherAddress, { address: '203.0.113.2', port: 3491 }, 'coturn answers RFC 5780');
          assert.equal(c.mapping, want.mapping, `mapping against coturn (${JSON.stringify(c.tests)})`);
          assert.equal(c.filtering, want.filtering, `filtering against coturn (${JSON.stringify(c.tests)})`);
          if (want.allocation) assert.equal(c.allocation, want.allocation, 'allocation against coturn');
        });
      } finally {
        const runId = lab.runId;
        await lab.destroy();
        await assertNothingLeft(runId);
      }
    });
  }

  it('estimates the binding lifetime of a router whose UDP mappings live 3 s: less than 5 s', async () => {
    assertLabAvailable();
    const lab = await createLab({ a: 'port-restricted', b: 'port-restricted', ipv6: true });
    try {
      const sysctl = await lab.exec('natA', 'sysctl', ['-qw', 'net.netfilter.nf_conntrack_udp_timeout=3', 'net.netfilter.nf_conntrack_udp_timeout_stream=3']);
      assert.equal(sysctl.code, 0, sysctl.stderr);
      await withServer(lab, async () => {
        const r = await netcheck(lab, ['--lifetime'], 60_000);
        assert.deepEqual(r.lifetime, { kind: 'estimate', goneMs: 5000 }, JSON.stringify(r.lifetime));
      });
    } finally {
      const runId = lab.runId;
      await lab.destroy();
      await assertNothingLeft(runId);
    }
  });
});
