/**
 * Stateless TURN nonces (coturn style): `EXPIRY(8 hex, unix seconds) ‖ MAC(16 hex)`, where MAC is HMAC-SHA256 of the
 * expiry and the client's IP address under a key the relay draws at start. A nonce costs the server no state, works
 * only from the address it was given to, and goes stale at its expiry (438 Stale Nonce, RFC 8489 section 9.2.4).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export type NonceCheck = 'fresh' | 'stale' | 'invalid';

export class NonceIssuer {
  constructor(
    private readonly key: Uint8Array,
    private readonly lifetimeSeconds: number,
  ) {}

  issue(clientAddress: string, nowMs: number): string {
    const expiry = (Math.floor(nowMs / 1000) + this.lifetimeSeconds).toString(16).padStart(8, '0');
    return expiry + this.mac(expiry, clientAddress);
  }

  check(nonce: string, clientAddress: string, nowMs: number): NonceCheck {
    if (nonce.length !== 24 || !/^[0-9a-f]{24}$/.test(nonce)) return 'invalid';
    const expiry = nonce.slice(0, 8);
    const mac = Buffer.from(nonce.slice(8), 'utf8');
    if (!timingSafeEqual(mac, Buffer.from(this.mac(expiry, clientAddress), 'utf8'))) return 'invalid';
    return parseInt(expiry, 16) * 1000 > nowMs ? 'fresh' : 'stale';
  }

  private mac(expiry: string, clientAddress: string): string {
    return createHmac('sha256', this.key).update(`${expiry}|${clientAddress}`).digest('hex').slice(0, 16);
  }
}
