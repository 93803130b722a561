/**
 * Transport addresses as plain data, and their conversion to and from bytes.
 *
 * Pure: no sockets, no DNS. IPv6 text is normalised to the RFC 5952 form so
 * that two spellings of one address compare equal as strings.
 */

export type Family = 4 | 6;

/** An IP address and UDP/TCP port, as text and number. */
export interface Endpoint {
  readonly address: string;
  readonly port: number;
}

export function endpointKey(e: Endpoint): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export function sameEndpoint(a: Endpoint, b: Endpoint): boolean {
  return a.port === b.port && a.address === b.address;
}

export function familyOf(address: string): Family {
  return address.includes(':') ? 6 : 4;
}

/** Parses dotted-quad IPv4 text into 4 bytes, or undefined if it is not one. */
export function parseIPv4(text: string): Uint8Array | undefined {
  // A scanner rather than split + regex: the server runs this for every datagram it answers.
  if (text.length < 7 || text.length > 15) return undefined;
  const out = new Uint8Array(4);
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x2e) {
      if (digits === 0 || part === 3) return undefined;
      out[part++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39 && digits < 3) {
      value = value * 10 + (c - 0x30);
      digits++;
      if (value > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (part !== 3 || digits === 0) return undefined;
  out[3] = value;
  return out;
}

/** Parses IPv6 text (with `::` and an optional embedded IPv4 tail) into 16 bytes. */
export function parseIPv6(text: string): Uint8Array | undefined {
  const zone = text.indexOf('%');
  const body = zone >= 0 ? text.slice(0, zone) : text;
  const halves = body.split('::');
  if (halves.length > 2) return undefined;
  const parseGroups = (s: string): number[] | undefined => {
    if (s === '') return [];
    const groups: number[] = [];
    const items = s.split(':');
    for (let i = 0; i < items.length; i++) {
      const item = items[i] ?? '';
      if (i === items.length - 1 && item.includes('.')) {
        const v4 = parseIPv4(item);
        if (!v4) return undefined;
        groups.push(((v4[0] ?? 0) << 8) | (v4[1] ?? 0), ((v4[2] ?? 0) << 8) | (v4[3] ?? 0));
        continue;
      }
      if (!/^[0-9a-fA-F]{1,4}$/.test(item)) return undefined;
      groups.push(parseInt(item, 16));
    }
    return groups;
  };
  const head = parseGroups(halves[0] ?? '');
  const tail = halves.length === 2 ? parseGroups(halves[1] ?? '') : [];
  if (!head || !tail) return undefined;
  const missing = 8 - head.length - tail.length;
  if (halves.length === 2 ? missing < 1 : missing !== 0) return undefined;
  const groups = [...head, ...new Array<number>(halves.length === 2 ? missing : 0).fill(0), ...tail];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  });
  return out;
}

/** Address text to bytes (4 or 16), or undefined when it is not an IP literal. */
export function addressToBytes(address: string): Uint8Array | undefined {
  return address.includes(':') ? parseIPv6(address) : parseIPv4(address);
}

/** 4 or 16 bytes to canonical text (RFC 5952 for IPv6; IPv4-mapped IPv6 stays IPv6). */
export function bytesToAddress(bytes: Uint8Array): string {
  if (bytes.length === 4) return `${bytes[0] ?? 0}.${bytes[1] ?? 0}.${bytes[2] ?? 0}.${bytes[3] ?? 0}`;
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // Longest run (length >= 2) of zero groups is compressed, first one on ties (RFC 5952 4.2).
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

/** Canonical text for an address literal, or undefined when it is not one. */
export function normaliseAddress(address: string): string | undefined {
  const bytes = addressToBytes(address);
  if (!bytes) return undefined;
  // Node reports IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d; treat them as IPv4.
  if (bytes.length === 16 && bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) {
    return bytesToAddress(bytes.subarray(12));
  }
  return bytesToAddress(bytes);
}

export type ParseEndpointResult = { ok: true; host: string; port: number } | { ok: false; reason: string };

/**
 * Parses `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (the last two with an empty host).
 * HOST may be a name; resolving it is the caller's business.
 */
export function parseHostPort(text: string, defaultPort?: number): ParseEndpointResult {
  let host: string;
  let portText: string | undefined;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0) return { ok: false, reason: `missing ']' in "${text}"` };
    host = text.slice(1, close);
    const rest = text.slice(close + 1);
    if (rest !== '' && !rest.startsWith(':')) return { ok: false, reason: `unexpected "${rest}" after ']' in "${text}"` };
    portText = rest === '' ? undefined : rest.slice(1);
  } else if (/^\d+$/.test(text)) {
    host = '';
    portText = text;
  } else {
    const colons = text.split(':').length - 1;
    if (colons === 0) {
      host = text;
      portText = undefined;
    } else if (colons === 1) {
      const i = text.indexOf(':');
      host = text.slice(0, i);
      portText = text.slice(i + 1);
    } else {
      host = text; // a bare IPv6 literal without a port
      portText = undefined;
    }
  }
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return { ok: false, reason: `no port in "${text}"` };
    port = defaultPort;
  } else {
    if (!/^\d{1,5}$/.test(portText)) return { ok: false, reason: `port "${portText}" is not a number` };
    port = Number(portText);
    if (port > 65535) return { ok: false, reason: `port ${port} is out of range 0-65535` };
  }
  return { ok: true, host, port };
}
