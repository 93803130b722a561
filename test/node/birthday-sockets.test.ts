/**
 * The hard side's birthday sockets through real sockets on loopback (src/node/birthday.ts): N sockets, one opening
 * datagram each from its own port, sent with the TTL asked for (IP_TTL read back from the kernel while it is set is
 * not exposed by Node; what is checked is that the TTL call succeeds and the socket still sends at the default
 * afterwards), and closing them releases every port.
 */
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { describe, it } from 'node:test';
import { openBirthdaySockets } from '../../src/node/birthday.js';

void describe('birthday sockets on loopback', () => {
  void it('opens N sockets, each sends its one opening datagram from its own port, and all close', async () => {
    const sink = dgram.createSocket('udp4');
    sink.bind(0, '127.0.0.1');
    await once(sink, 'listening');
    const from = new Set<number>();
    const got = new Promise<void>((resolve) => {
      sink.on('message', (msg, rinfo) => {
        assert.deepEqual([...msg], [0]);
        from.add(rinfo.port);
        if (from.size === 100) resolve();
      });
    });
    const { sockets, error } = await openBirthdaySockets('127.0.0.1', 100, 2, { address: '127.0.0.1', port: sink.address().port }, Uint8Array.of(0));
    try {
      assert.equal(error, undefined);
      assert.equal(sockets.length, 100);
      assert.equal(new Set(sockets.map((s) => s.local.port)).size, 100);
      await got;
      assert.deepEqual([...from].sort(), sockets.map((s) => s.local.port).sort());
      // After the opening datagram the TTL is back to the default: a later send still arrives.
      const again = once(sink, 'message');
      sockets[0]!.send({ address: '127.0.0.1', port: sink.address().port }, Uint8Array.of(0), () => undefined);
      await again;
    } finally {
      await Promise.all(sockets.map((s) => s.close()));
      sink.close();
    }
    // Every port is free again: the handoff binds the winner's.
    const rebind = dgram.createSocket('udp4');
    rebind.bind(sockets[1]!.local.port, '127.0.0.1');
    await once(rebind, 'listening');
    rebind.close();
  });
});
