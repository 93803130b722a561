/** The NAT classification module (src/core/nat/classify.ts): pure functions, every branch. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  classifyAllocation,
  classifyFiltering,
  classifyMapping,
  factsFromWire,
  KIND_FACTS,
  natName,
  pairPath,
  PEER_KINDS,
  verdict,
  wireMapping,
} from '../../src/core/nat/classify.js';

const e = (port: number, address = '198.51.100.1') => ({ address, port });

describe('classifyMapping (RFC 5780 section 4.3)', () => {
  it('no NAT when the mapping is the local address', () => {
    assert.equal(classifyMapping({ local: e(5000), primary: e(5000), otherIp: e(5000) }), 'no-nat');
  });
  it('endpoint-independent, address-dependent, address-and-port-dependent', () => {
    assert.equal(classifyMapping({ local: e(5000, '192.0.2.1'), primary: e(40000), otherIp: e(40000), otherIpPort: e(40000) }), 'endpoint-independent');
    assert.equal(classifyMapping({ primary: e(40000), otherIp: e(40001), otherIpPort: e(40001) }), 'address-dependent');
    assert.equal(classifyMapping({ primary: e(40000), otherIp: e(40001), otherIpPort: e(40002) }), 'address-and-port-dependent');
    assert.equal(classifyMapping({ primary: e(40000), otherIp: e(40001) }), 'endpoint-dependent');
  });
  it('a port-only change after a same-IP test II still counts', () => {
    assert.equal(classifyMapping({ primary: e(40000), otherIp: e(40000), otherPort: e(40003) }), 'address-and-port-dependent');
  });
  it('one IP: the alternate port alone', () => {
    assert.equal(classifyMapping({ primary: e(40000), otherPort: e(40000) }), 'endpoint-independent');
    assert.equal(classifyMapping({ primary: e(40000), otherPort: e(40007) }), 'address-and-port-dependent');
    assert.equal(classifyMapping({ primary: e(40000) }), 'unknown');
  });
});

describe('classifyFiltering (RFC 5780 section 4.4)', () => {
  it('names each behaviour; a test not run leaves it unknown', () => {
    assert.equal(classifyFiltering({ otherIpPort: true }), 'endpoint-independent');
    assert.equal(classifyFiltering({ otherIpPort: false, otherPort: true }), 'address-dependent');
    assert.equal(classifyFiltering({ otherIpPort: false, otherPort: false }), 'address-and-port-dependent');
    assert.equal(classifyFiltering({ otherIpPort: false }), 'unknown');
    assert.equal(classifyFiltering({}), 'unknown');
  });
});

describe('classifyAllocation', () => {
  it('preserving, sequential, random, unknown', () => {
    assert.equal(classifyAllocation([{ local: e(5000), mapped: e(5000) }, { local: e(5001), mapped: e(5001) }]), 'preserving');
    assert.equal(classifyAllocation([{ local: e(5000), mapped: e(40000) }, { local: e(5001), mapped: e(40001) }, { local: e(5002), mapped: e(40003) }]), 'sequential');
    assert.equal(classifyAllocation([{ local: e(5000), mapped: e(40000) }, { local: e(5001), mapped: e(52000) }]), 'random');
    assert.equal(classifyAllocation([{ local: e(5000), mapped: e(40010) }, { local: e(5001), mapped: e(40001) }]), 'random', 'a step backwards is not sequential');
    assert.equal(classifyAllocation([{ local: e(5000), mapped: e(40000) }]), 'unknown');
    assert.equal(classifyAllocation([]), 'unknown');
  });
});

describe('pairPath and the verdict', () => {
  it('the lab matrix: easy pairs direct, one hard side against a port-restricted filter needs birthday, two hard sides the relay', () => {
    const table: Record<string, string> = {};
    for (const a of PEER_KINDS) for (const b of PEER_KINDS) table[`${a}/${b}`] = pairPath(KIND_FACTS[a], KIND_FACTS[b]);
    assert.equal(table['port-restricted/port-restricted'], 'direct');
    assert.equal(table['full-cone/symmetric'], 'direct');
    assert.equal(table['address-restricted/symmetric'], 'direct');
    assert.equal(table['port-restricted/symmetric'], 'birthday');
    assert.equal(table['firewall/symmetric'], 'birthday');
    assert.equal(table['symmetric/port-restricted'], 'birthday');
    assert.equal(table['symmetric/symmetric'], 'relay');
    for (const a of PEER_KINDS) for (const b of PEER_KINDS) assert.equal(table[`${a}/${b}`], table[`${b}/${a}`], 'symmetric in its arguments');
  });

  it('unknown filtering counts as the strictest, and the line says so', () => {
    const v = verdict({ mapping: 'endpoint-independent', filtering: 'unknown', allocation: 'preserving' });
    assert.deepEqual(v.birthday, ['symmetric']);
    assert.match(v.line, /filtering unknown: assumed address-and-port-dependent/);
  });

  it('no UDP: every peer needs the relay', () => {
    assert.deepEqual(verdict(KIND_FACTS['full-cone'], false).relay, [...PEER_KINDS]);
  });

  it('names and wire codes', () => {
    assert.equal(natName(KIND_FACTS['address-restricted']), 'address-restricted cone NAT');
    assert.equal(natName(KIND_FACTS.firewall), 'no NAT (a firewall filters)');
    assert.equal(wireMapping('address-dependent'), 'endpoint-dependent');
    assert.equal(wireMapping('no-nat'), 'endpoint-independent');
    assert.deepEqual(factsFromWire('endpoint-dependent', 'random'), { mapping: 'endpoint-dependent', filtering: 'unknown', allocation: 'random' });
  });
});
