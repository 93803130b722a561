/**
 * `--server S1,S2` as every command reads it (resolveServers, src/node/udp.ts): the list in order, default port,
 * repeats dropped, a name expanded to its addresses, only the first entry's address family kept, and bad entries
 * named.
 */
import assert from 'node:assert/strict';
import { lookup } from 'node:dns/promises';
import { describe, it } from 'node:test';
import { resolveServers } from '../../src/node/udp.js';

describe('resolveServers (--server S1,S2)', () => {
  it('keeps the order, fills in the default port, drops repeats and other families', async () => {
    const list = await resolveServers('203.0.113.1:3478, 203.0.113.2,203.0.113.1:3478,[2001:db8::1]:3478,203.0.113.1:3490', 3478, 'server');
    assert.deepEqual(list, [
      { address: '203.0.113.1', port: 3478 },
      { address: '203.0.113.2', port: 3478 },
      { address: '203.0.113.1', port: 3490 },
    ]);
  });

  it('a name becomes every address it resolves to (of the first family)', async () => {
    const all = await lookup('localhost', { all: true, order: 'ipv4first' });
    const list = await resolveServers('localhost:4000', 3478, 'server');
    const family = all[0]?.family;
    assert.deepEqual(list.map((e) => e.address), all.filter((a) => a.family === family).map((a) => a.address).filter((a, i, xs) => xs.indexOf(a) === i));
    assert.ok(list.every((e) => e.port === 4000));
  });

  it('a bad entry is named', async () => {
    await assert.rejects(resolveServers('203.0.113.1:3478,203.0.113.2:99999', 3478, 'server'), (e: Error) => /203\.0\.113\.2:99999/.test(e.message) || /99999/.test(JSON.stringify(e)));
    await assert.rejects(resolveServers(' , ', 3478, 'server'), /no server given/);
  });
});
