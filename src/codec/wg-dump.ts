/**
 * Parser for `wg show IFACE dump` (wireguard-tools): one tab-separated line for the interface
 * (private-key, public-key, listen-port, fwmark), then one per peer (public-key, preshared-key, endpoint,
 * allowed-ips, latest-handshake, transfer-rx, transfer-tx, persistent-keepalive). Pure; never throws.
 */
import { parseHostPort, normaliseAddress, type Endpoint } from './address.js';
import { decodeKey } from '../crypto/wireguard.js';

export interface WgDumpPeer {
  /** Base64, as `wg` prints it. */
  readonly publicKey: string;
  /** Base64, or undefined for none. */
  readonly presharedKey: string | undefined;
  readonly endpoint: Endpoint | undefined;
  readonly allowedIps: readonly string[];
  /** Unix seconds of the latest handshake; 0 = never. */
  readonly latestHandshake: number;
  readonly rxBytes: number;
  readonly txBytes: number;
  /** Seconds; 0 = off. */
  readonly persistentKeepalive: number;
}

export interface WgDump {
  readonly privateKey: Uint8Array;
  readonly publicKey: string;
  readonly listenPort: number;
  readonly peers: readonly WgDumpPeer[];
}

export type WgDumpResult = { readonly ok: true; readonly dump: WgDump } | { readonly ok: false; readonly reason: string };

function count(text: string | undefined): number | undefined {
  if (text === undefined || !/^\d{1,15}$/.test(text)) return undefined;
  return Number(text);
}

function endpointOf(text: string): Endpoint | undefined | null {
  if (text === '(none)') return undefined;
  const parsed = parseHostPort(text);
  if (!parsed.ok) return null;
  const address = normaliseAddress(parsed.host);
  return address === undefined ? null : { address, port: parsed.port };
}

export function parseWgDump(text: string): WgDumpResult {
  const lines = text.split('\n').filter((l) => l.length > 0);
  const head = lines[0]?.split('\t');
  if (!head || head.length !== 4) return { ok: false, reason: 'the first line does not have the 4 interface fields' };
  const [privateText, publicText, portText] = head as [string, string, string, string];
  const privateKey = decodeKey(privateText);
  if (!privateKey) {
    return { ok: false, reason: privateText === '(none)' ? 'the interface has no private key' : 'the private key is not readable (run as root or with CAP_NET_ADMIN)' };
  }
  if (!decodeKey(publicText)) return { ok: false, reason: 'the interface public key is malformed' };
  const listenPort = count(portText);
  if (listenPort === undefined || listenPort > 65535) return { ok: false, reason: `listen port ${JSON.stringify(portText)} is malformed` };
  const peers: WgDumpPeer[] = [];
  for (const [i, line] of lines.slice(1).entries()) {
    const f = line.split('\t');
    if (f.length !== 8) return { ok: false, reason: `peer line ${i + 1} does not have 8 fields` };
    const [key, psk, endpointText, ips, hs, rx, tx, ka] = f as [string, string, string, string, string, string, string, string];
    if (!decodeKey(key)) return { ok: false, reason: `peer line ${i + 1}: malformed public key` };
    const endpoint = endpointOf(endpointText);
    if (endpoint === null) return { ok: false, reason: `peer line ${i + 1}: malformed endpoint ${JSON.stringify(endpointText)}` };
    const latestHandshake = count(hs);
    const rxBytes = count(rx);
    const txBytes = count(tx);
    const keepalive = ka === 'off' ? 0 : count(ka);
    if (latestHandshake === undefined || rxBytes === undefined || txBytes === undefined || keepalive === undefined) {
      return { ok: false, reason: `peer line ${i + 1}: malformed counters` };
    }
    if (psk !== '(none)' && !decodeKey(psk)) return { ok: false, reason: `peer line ${i + 1}: malformed preshared key` };
    peers.push({
      publicKey: key,
      presharedKey: psk === '(none)' ? undefined : psk,
      endpoint,
      allowedIps: ips === '(none)' ? [] : ips.split(','),
      latestHandshake,
      rxBytes,
      txBytes,
      persistentKeepalive: keepalive,
    });
  }
  return { ok: true, dump: { privateKey, publicKey: publicText, listenPort, peers } };
}
