/**
 * The NAT matrix's pure parts: reading what a peer printed, the path of a run, the cells' summary, and the SVG and text
 * renderings. No lab needed.
 */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatMatrixText, runAsExpected } from '../../src/cli/lab.js';
import { median, parsePeerOutput, runPath, summarizeCells, type MatrixPeer, type MatrixResult, type MatrixRun } from '../../src/lab/matrix.js';
import { cellLines, escapeXml, PATH_COLOURS, renderMatrixSvg } from '../../src/lab/matrix-svg.js';
import type { NatKind } from '../../src/lab/nat-rules.js';

const REPORT = '{"ok":true,"heard":true,"peerHeard":true,"sent":3,"received":2,"strangers":0,"firstHeardMs":12,"elapsedMs":40}';

function peer(over: Partial<MatrixPeer> = {}): MatrixPeer {
  return {
    name: 'p', kind: 'port-restricted', node: 'hA', exitCode: 0, signal: null, path: 'direct', finalPath: 'direct', elapsedMs: 500, birthday: null, moves: [], relayServer: null,
    exchanged: true, resultAfterMs: 600, error: null, stdout: '', stderr: '', ...over,
  };
}

function run(first: NatKind, second: NatKind, over: Partial<MatrixRun> = {}): MatrixRun {
  return {
    relay: 'builtin', first, second, position: 'a', index: 0, runId: 'abcdef', path: 'direct', initialPath: 'direct', connected: true, connectMs: 500, probes: null, sockets: null,
    relayDatagrams: 0, relayDatagramsAfterResult: 0, peers: { first: peer(), second: peer() }, harnessError: null, ...over,
  };
}

void describe('lab matrix: reading the peers', () => {
  void it('takes the result from the first line, path moves from event lines and the exchange from the last', () => {
    const out = [
      '{"localAddress":"127.0.0.1","localPort":4000,"remoteAddress":"127.0.0.1","remotePort":4001,"path":"relay","elapsedMs":912,"relay":null,"upstream":"203.0.113.9:49160"}',
      '{"event":"path","path":"direct","upstream":"198.51.100.6:5000","reason":"validated","elapsedMs":5000}',
      REPORT,
    ].join('\n');
    const p = parsePeerOutput(`${out}\n`);
    assert.equal(p.path, 'relay');
    assert.equal(p.finalPath, 'direct');
    assert.equal(p.elapsedMs, 912);
    assert.deepEqual(p.moves, ['direct']);
    assert.equal(p.relayServer, '203.0.113.9:49160', 'no allocation of its own: the partner\'s relayed address');
    assert.equal(parsePeerOutput('{"path":"relay","elapsedMs":1,"relay":{"kind":"turn","server":"203.0.113.9:3478","relayed":"203.0.113.9:49170"}}\n').relayServer, '203.0.113.9:3478');
    assert.equal(p.exchanged, true);
    assert.equal(p.birthday, null);
    assert.equal(p.error, null);
  });

  void it('reads the birthday object of the result or of the move to direct, and an exchange that did not complete', () => {
    const p = parsePeerOutput('{"path":"direct","elapsedMs":2400,"birthday":{"role":"easy","probes":312}}\n{"ok":false,"heard":false,"peerHeard":false}\n');
    assert.deepEqual(p.birthday, { role: 'easy', probes: 312 });
    assert.equal(p.exchanged, false);
    const moved = ['{"path":"relay","elapsedMs":900}', '{"event":"path","path":"direct","reason":"upgrade","elapsedMs":3100,"birthday":{"role":"hard","probes":512}}', REPORT].join('\n');
    assert.deepEqual(parsePeerOutput(moved).birthday, { role: 'hard', probes: 512 });
    const back = ['{"path":"relay","elapsedMs":900}', '{"event":"path","path":"direct","birthday":{"role":"hard","probes":512}}', '{"event":"path","path":"relay"}', REPORT].join('\n');
    assert.equal(parsePeerOutput(back).finalPath, 'relay');
    assert.equal(parsePeerOutput(back).birthday, null);
  });

  void it('reads the JSON error of a failed punch; a result alone is no exchange', () => {
    const p = parsePeerOutput('{"error":{"code":"NO_PATH","exitCode":5,"message":"no direct path. No relay either: the server offers no relay."}}\n');
    assert.equal(p.path, null);
    assert.match(p.error ?? '', /^NO_PATH: .*offers no relay/);
    assert.equal(parsePeerOutput('{"path":"direct","elapsedMs":1}\n').exchanged, false);
    assert.equal(parsePeerOutput('not json\n').path, null);
  });

  void it('calls a run relay if either side relays, birthday if either side probed, failed unless both exchanged', () => {
    const ok = { path: 'direct' as const, finalPath: 'direct' as const, birthday: null, exchanged: true, exitCode: 0 };
    assert.equal(runPath(ok, ok), 'direct');
    assert.equal(runPath({ ...ok, path: 'lan', finalPath: 'lan' }, { ...ok, path: 'lan', finalPath: 'lan' }), 'lan');
    assert.equal(runPath(ok, { ...ok, path: 'relay', finalPath: 'relay' }), 'relay');
    // Relayed first, then both moved to a path birthday probing found.
    const upgraded = { ...ok, path: 'relay' as const, birthday: { role: 'easy', probes: 200 } };
    assert.equal(runPath(upgraded, { ...upgraded, birthday: null }), 'birthday');
    assert.equal(runPath(upgraded, { ...upgraded, birthday: null }, 'initial'), 'relay');
    assert.equal(runPath(upgraded, { ...ok, path: 'relay', finalPath: 'relay' }), 'relay', 'one side still relays');
    assert.equal(runPath(ok, { ...ok, birthday: { role: 'hard', probes: 0 } }), 'birthday');
    assert.equal(runPath(ok, { ...ok, exchanged: false }), 'failed');
    assert.equal(runPath({ ...ok, exitCode: 5 }, ok), 'failed');
  });
});

void describe('lab matrix: cells', () => {
  void it('takes the most common path, the worse one on a tie, and medians over connected runs', () => {
    const runs = [
      run('symmetric', 'symmetric', { path: 'relay', initialPath: 'relay', connectMs: 900, relayDatagrams: 120 }),
      run('symmetric', 'symmetric', { path: 'failed', initialPath: 'failed', connected: false, connectMs: null }),
      run('port-restricted', 'symmetric', { path: 'birthday', connectMs: 2000, probes: 300, sockets: 512, relayDatagrams: 9, relayDatagramsAfterResult: 0 }),
      run('port-restricted', 'symmetric', { path: 'birthday', connectMs: 3000, probes: 500, sockets: 512, relayDatagrams: 4, relayDatagramsAfterResult: 0 }),
      run('port-restricted', 'symmetric', { path: 'birthday', initialPath: 'relay', connectMs: 800, probes: 100, sockets: 256, relayDatagrams: 90, relayDatagramsAfterResult: 40 }),
      run('port-restricted', 'symmetric', { path: 'relay', initialPath: 'relay', connectMs: 1000 }),
    ];
    const cells = summarizeCells(runs, ['builtin', 'coturn'], [['symmetric', 'symmetric'], ['port-restricted', 'symmetric'], ['full-cone', 'full-cone']]);
    assert.equal(cells.length, 2, 'cells without runs are left out');
    const [ss, ps] = cells;
    assert.equal(ss?.path, 'failed');
    assert.equal(ss.agreeing, 1);
    assert.equal(ss.connected, 1);
    assert.equal(ss.medianConnectMs, 900);
    assert.equal(ss.relayedOnDirect, null);
    assert.equal(ps?.path, 'birthday');
    assert.equal(ps.agreeing, 3);
    assert.equal(ps.runs, 4);
    assert.equal(ps.upgraded, 1);
    assert.equal(ps.medianConnectMs, 1500);
    assert.equal(ps.medianProbes, 300);
    assert.equal(ps.medianSockets, 512);
    assert.equal(ps.relayedOnDirect, 9, 'the upgraded run relayed before its move, and counts for nothing here');
    assert.equal(ps.relayedOnDirectAfterResult, 0);
    assert.deepEqual(cellLines(ps), ['birthday 3/4', 'median 1500 ms · 1 relayed first', '300 probes, 512 sockets']);
    assert.equal(median([]), null);
    assert.equal(median([3, 1, 2]), 2);
  });

  void it('counts exit 5 on both sides as expected only where no relay is reachable', () => {
    const five = peer({ exitCode: 5, path: null, exchanged: false, error: 'NO_PATH: …' });
    const noPath = { path: 'failed' as const, connected: false, connectMs: null, peers: { first: five, second: five } };
    assert.equal(runAsExpected(run('symmetric', 'symmetric', { ...noPath, relay: 'none' })), true);
    assert.equal(runAsExpected(run('symmetric', 'symmetric', { ...noPath, relay: 'coturn-stopped' })), true);
    assert.equal(runAsExpected(run('symmetric', 'symmetric', { ...noPath, relay: 'builtin' })), false);
    assert.equal(runAsExpected(run('symmetric', 'symmetric', { ...noPath, relay: 'none', peers: { first: five, second: peer({ exitCode: 4 }) } })), false);
  });
});

void describe('lab matrix: the picture', () => {
  const runs = [
    run('full-cone', 'symmetric', { path: 'direct', connectMs: 450 }),
    run('symmetric', 'full-cone', { path: 'direct', connectMs: 650 }),
    run('symmetric', 'symmetric', { path: 'relay', initialPath: 'relay', connectMs: 1234 }),
    run('symmetric', 'symmetric', { relay: 'none', path: 'failed', connected: false, connectMs: null, relayDatagrams: null }),
  ];
  const cells: [NatKind, NatKind][] = [['full-cone', 'full-cone'], ['full-cone', 'symmetric'], ['symmetric', 'full-cone'], ['symmetric', 'symmetric']];
  const result: MatrixResult = {
    kinds: ['full-cone', 'symmetric'], relays: ['builtin', 'none'], runsPerCell: 1, startedAt: '2026-12-02T17:00:00.000Z', durationMs: 1000,
    runs, cells: summarizeCells(runs, ['builtin', 'none'], cells),
  };

  void it('draws one grid per relay mode, a coloured cell per pair run and "not run" for the others', () => {
    const svg = renderMatrixSvg(result, 'made <here> & now');
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    assert.ok(svg.trimEnd().endsWith('</svg>'));
    assert.match(svg, /the built-in relay of burrow serve/);
    assert.match(svg, /none \(burrow punch --relay never\)/);
    assert.match(svg, /made &lt;here&gt; &amp; now/);
    // Every opened <g> and <text> is closed: the file is well formed enough for browsers and GitHub.
    assert.equal((svg.match(/<g>/g) ?? []).length, (svg.match(/<\/g>/g) ?? []).length);
    assert.equal((svg.match(/<text /g) ?? []).length, (svg.match(/<\/text>/g) ?? []).length);
    assert.equal((svg.match(new RegExp(`fill="${PATH_COLOURS.direct.fill}"`, 'g')) ?? []).length, 3, 'two direct cells and the legend');
    assert.equal((svg.match(new RegExp(`fill="${PATH_COLOURS.relay.fill}"`, 'g')) ?? []).length, 2, 'one relay cell and the legend');
    assert.equal((svg.match(new RegExp(`fill="${PATH_COLOURS.failed.fill}"`, 'g')) ?? []).length, 2, 'one failed cell and the legend');
    assert.equal((svg.match(/>not run</g) ?? []).length, 4, 'one cell of the first grid, three of the second');
    assert.match(svg, /<title>symmetric first, symmetric second, builtin: relay 1\/1, median 1234 ms, no birthday probes<\/title>/);
    assert.equal(escapeXml(`a<b>&"'`), 'a&lt;b&gt;&amp;&quot;&apos;');
  });

  void it('prints a table per relay mode', () => {
    const text = formatMatrixText(result);
    assert.match(text, /relay builtin \(rows: the peer that starts first; 1 runs per cell\)/);
    assert.match(text, /symmetric\s+direct 1\/1, 650 ms\s+relay 1\/1, 1234 ms/);
    assert.match(text, /relay none[^\n]*\n[^\n]*\nfull-cone\s+-\s+-/);
  });
});
