#!/usr/bin/env python3
"""A fast, dumb UDP flood sender for the flood tests (test/node/flood.test.ts): cycles through the datagrams in
--file (records of port u16, length u16, bytes; all to 127.0.0.1) from one socket per --sources address, in a tight
sendto loop, several times cheaper per datagram than Node's dgram. Bounded: stops after --max-seconds or 50,000,000
datagrams, and on SIGTERM. Prints one JSON line of counts on exit."""
import argparse, json, signal, socket, struct, sys, time

p = argparse.ArgumentParser()
p.add_argument('--file', required=True)
p.add_argument('--sources', required=True)
p.add_argument('--max-seconds', type=float, default=120)
a = p.parse_args()

data = open(a.file, 'rb').read()
records = []
at = 0
while at + 4 <= len(data):
    port, length = struct.unpack_from('>HH', data, at)
    records.append((data[at + 4:at + 4 + length], ('127.0.0.1', port)))
    at += 4 + length
socks = []
for src in a.sources.split(','):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    socks.append(s)

stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)

sent = 0
sent_bytes = 0
deadline = time.monotonic() + min(a.max_seconds, 600)
n, k = len(records), len(socks)
while not stop and sent < 50_000_000 and time.monotonic() < deadline:
    for _ in range(4096):
        payload, dest = records[sent % n]
        try:
            socks[sent % k].sendto(payload, dest)
        except OSError:
            pass
        sent += 1
        sent_bytes += len(payload)
print(json.dumps({'sent': sent, 'sentBytes': sent_bytes}))
sys.stdout.flush()
