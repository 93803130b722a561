/** The per-file check of transfer protocol v3 (GMAC): against WebCrypto's AES-GCM, chunking, keying by index. */
import assert from 'node:assert/strict';
import { randomBytes, webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';
import { FileCheck } from '../../src/transfer/check.js';

/** The definition in docs/protocol.md, computed independently: AES-256-GCM, empty plaintext, data as AAD. */
async function reference(key: Uint8Array, index: number, data: Uint8Array): Promise<string> {
  const iv = Buffer.alloc(12);
  iv.write('BRWC', 0, 'ascii');
  iv.writeUInt32BE(index, 8);
  const k = await webcrypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt']);
  const tag = await webcrypto.subtle.encrypt({ name: 'AES-GCM', iv, additionalData: data, tagLength: 128 }, k, new Uint8Array(0));
  return Buffer.from(tag).toString('hex');
}

const KEY = Buffer.from(Array.from({ length: 32 }, (_, i) => i));

describe('FileCheck (GMAC per entry)', () => {
  it('golden: key 00…1f, entry 1, "hello" and no bytes at all', async () => {
    const hello = new FileCheck(KEY, 1);
    hello.update(Buffer.from('hello'));
    assert.equal(hello.digest().toString('hex'), await reference(KEY, 1, Buffer.from('hello')));
    assert.equal(hello.bytes, 5);
    const empty = new FileCheck(KEY, 1);
    assert.equal(empty.digest().toString('hex'), await reference(KEY, 1, new Uint8Array(0)));
  });

  it('equals the reference for any chunking of the data (odd sizes, across 16-byte blocks)', async () => {
    const key = randomBytes(32);
    const data = randomBytes(300_017);
    const expected = await reference(key, 7, data);
    for (const piece of [1, 15, 16, 17, 4096, 65_537, 300_017]) {
      const c = new FileCheck(key, 7);
      for (let at = 0; at < data.length; at += piece) c.update(data.subarray(at, at + piece));
      c.update(new Uint8Array(0));
      assert.equal(c.digest().toString('hex'), expected, `pieces of ${piece}`);
    }
  });

  it('differs for another entry index, another key, one changed bit, or bytes moved between positions', () => {
    const data = randomBytes(4096);
    const tag = (key: Uint8Array, index: number, d: Uint8Array): string => {
      const c = new FileCheck(key, index);
      c.update(d);
      return c.digest().toString('hex');
    };
    const base = tag(KEY, 0, data);
    assert.notEqual(tag(KEY, 1, data), base);
    assert.notEqual(tag(randomBytes(32), 0, data), base);
    const flipped = Buffer.from(data);
    flipped[2000] = (flipped[2000] ?? 0) ^ 1;
    assert.notEqual(tag(KEY, 0, flipped), base);
    const swapped = Buffer.concat([data.subarray(2048), data.subarray(0, 2048)]);
    assert.notEqual(tag(KEY, 0, swapped), base);
    assert.notEqual(tag(KEY, 0, data.subarray(0, 4095)), base, 'a shorter input');
  });

  it('refuses a key of the wrong size and use after digest', () => {
    assert.throws(() => new FileCheck(new Uint8Array(16), 0), RangeError);
    const c = new FileCheck(KEY, 0);
    c.digest();
    assert.throws(() => { c.update(Buffer.from('x')); }, /finished/);
    assert.throws(() => c.digest(), /finished/);
  });
});
