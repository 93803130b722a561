/**
 * A streaming reader of pcap captures (as written by `tcpdump -U -w -`), yielding UDP datagrams.
 * Pure and incremental: feed it chunks, it returns whole datagrams; malformed records are skipped.
 * Used by the lab's attacker to replay live captures.
 */
import { bytesToAddress } from '../../src/codec/address.js';

export interface CapturedDatagram {
  readonly src: { address: string; port: number };
  readonly dst: { address: string; port: number };
  readonly payload: Uint8Array;
}

export class PcapReader {
  private buf = Buffer.alloc(0);
  private little = true;
  private linktype = -1;

  push(chunk: Uint8Array): CapturedDatagram[] {
    this.buf = Buffer.concat([this.buf, chunk]);
    const out: CapturedDatagram[] = [];
    if (this.linktype < 0) {
      if (this.buf.length < 24) return out;
      const magic = this.buf.readUInt32LE(0);
      if (magic === 0xa1b2c3d4 || magic === 0xa1b23c4d) this.little = true;
      else if (magic === 0xd4c3b2a1 || magic === 0x4d3cb2a1) this.little = false;
      else throw new Error('not a pcap stream');
      this.linktype = this.little ? this.buf.readUInt32LE(20) : this.buf.readUInt32BE(20);
      this.buf = this.buf.subarray(24);
    }
    for (;;) {
      if (this.buf.length < 16) break;
      const incl = this.little ? this.buf.readUInt32LE(8) : this.buf.readUInt32BE(8);
      if (incl > 262_144) throw new Error('corrupt pcap record');
      if (this.buf.length < 16 + incl) break;
      const frame = this.buf.subarray(16, 16 + incl);
      this.buf = this.buf.subarray(16 + incl);
      const d = parseFrame(frame, this.linktype);
      if (d) out.push(d);
    }
    return out;
  }
}

/** Link layer → IP → UDP. Returns undefined for anything that is not a whole UDP datagram. */
export function parseFrame(frame: Uint8Array, linktype: number): CapturedDatagram | undefined {
  const b = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  let proto: number;
  let at: number;
  switch (linktype) {
    case 1: // Ethernet
      if (b.length < 14) return undefined;
      proto = b.readUInt16BE(12);
      at = 14;
      if (proto === 0x8100 && b.length >= 18) {
        proto = b.readUInt16BE(16);
        at = 18;
      }
      break;
    case 113: // Linux cooked v1
      if (b.length < 16) return undefined;
      proto = b.readUInt16BE(14);
      at = 16;
      break;
    case 276: // Linux cooked v2
      if (b.length < 20) return undefined;
      proto = b.readUInt16BE(0);
      at = 20;
      break;
    case 101: // raw IP
      at = 0;
      proto = b.length > 0 && ((b[0] ?? 0) >> 4) === 6 ? 0x86dd : 0x0800;
      break;
    default:
      return undefined;
  }
  let src: Uint8Array;
  let dst: Uint8Array;
  let udp: number;
  if (proto === 0x0800) {
    if (b.length < at + 20) return undefined;
    const ihl = ((b[at] ?? 0) & 0x0f) * 4;
    if (b[at + 9] !== 17 || ihl < 20) return undefined;
    if ((b.readUInt16BE(at + 6) & 0x3fff) !== 0) return undefined; // fragments
    src = b.subarray(at + 12, at + 16);
    dst = b.subarray(at + 16, at + 20);
    udp = at + ihl;
  } else if (proto === 0x86dd) {
    if (b.length < at + 40 || b[at + 6] !== 17) return undefined;
    src = b.subarray(at + 8, at + 24);
    dst = b.subarray(at + 24, at + 40);
    udp = at + 40;
  } else return undefined;
  if (b.length < udp + 8) return undefined;
  const length = b.readUInt16BE(udp + 4);
  if (length < 8 || udp + length > b.length) return undefined;
  return {
    src: { address: bytesToAddress(src), port: b.readUInt16BE(udp) },
    dst: { address: bytesToAddress(dst), port: b.readUInt16BE(udp + 2) },
    payload: Uint8Array.from(b.subarray(udp + 8, udp + length)),
  };
}
