/** Parsing `burrow punch --format json` output for the lab scenario: pure, no root needed. */

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isLabAddress, parsePunchOutput } from '../../src/lab/scenario.js';

const GOOD = { localAddress: '0.0.0.0', localPort: 40000, remoteAddress: '198.51.100.6', remotePort: 40001, path: 'direct', elapsedMs: 12 };

void describe('parsePunchOutput', () => {
  void it('accepts exactly one object with the contract’s fields, and tolerates extra fields', () => {
    assert.deepEqual(parsePunchOutput(`${JSON.stringify(GOOD)}\n`), { ok: true, value: GOOD });
    assert.equal(parsePunchOutput(JSON.stringify({ ...GOOD, path: 'lan', peer: 'bob' })).ok, true);
  });

  void it('rejects anything else, saying what is wrong', () => {
    const twice = parsePunchOutput(`${JSON.stringify(GOOD)}\n${JSON.stringify(GOOD)}\n`);
    assert.equal(twice.ok, false);
    for (const [field, value] of [['localPort', 0], ['remotePort', '40001'], ['remoteAddress', 'bob'], ['path', 'relay'], ['elapsedMs', -1]] as const) {
      const parsed = parsePunchOutput(JSON.stringify({ ...GOOD, [field]: value }));
      assert.ok(!parsed.ok && parsed.reason.includes(field), `${field}=${String(value)}: ${JSON.stringify(parsed)}`);
    }
    assert.equal(parsePunchOutput('').ok, false);
    assert.equal(parsePunchOutput('[1]').ok, false);
  });
});

void describe('isLabAddress', () => {
  void it('accepts only the documentation ranges the lab uses', () => {
    for (const address of ['192.0.2.3', '198.51.100.6', '203.0.113.1', '2001:db8:a::2']) assert.ok(isLabAddress(address), address);
    for (const address of ['10.0.0.1', '127.0.0.1', '8.8.8.8', '192.0.20.1', '2001:db9::1', '::1', 'alice']) assert.ok(!isLabAddress(address), address);
  });
});
