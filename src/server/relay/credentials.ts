/**
 * Checking the built-in relay's long-term credentials (src/codec/turn.ts `builtinCredentials`), shared by the UDP
 * relay (TURN) and the stream relay. Pure.
 */
import { checkName } from '../../codec/messages.js';
import { builtinCredentials, BUILTIN_REALM, parseBuiltinUsername, verifyTurnIntegrity, type BuiltinIdentity, type TurnMessage } from '../../codec/turn.js';
import type { NetworkKeys } from '../../crypto/keys.js';

export type CredentialCheck =
  | { readonly ok: true; readonly id: BuiltinIdentity; readonly key: Uint8Array }
  | { readonly ok: false; readonly reason: 'bad-credentials' | 'expired-credentials'; readonly detail: string };

/**
 * Whether `m` (USERNAME, REALM and MESSAGE-INTEGRITY present; the caller checked the NONCE) carries valid built-in
 * credentials of a network in `networks`. `checkExpiry`: also refuse credentials past their expiry, or valid for
 * longer than `maxSeconds` from now (new sessions; requests on an existing allocation skip it).
 */
export function checkBuiltin(networks: ReadonlyMap<string, NetworkKeys>, m: TurnMessage, data: Uint8Array, nowMs: number, checkExpiry: boolean, maxSeconds: number): CredentialCheck {
  if (m.realm !== BUILTIN_REALM) return { ok: false, reason: 'bad-credentials', detail: `realm "${m.realm ?? ''}"` };
  const id = m.username === undefined ? undefined : parseBuiltinUsername(m.username);
  if (!id) return { ok: false, reason: 'bad-credentials', detail: 'not a Burrow relay username' };
  const network = networks.get(id.networkIdHex);
  if (!network) return { ok: false, reason: 'bad-credentials', detail: 'unknown network' };
  if (checkName(id.name) !== undefined || checkName(id.peer) !== undefined || id.name === id.peer) return { ok: false, reason: 'bad-credentials', detail: 'bad peer names' };
  const { key } = builtinCredentials(network.relay, id);
  if (verifyTurnIntegrity(data, m, key) !== 'valid') return { ok: false, reason: 'bad-credentials', detail: 'MESSAGE-INTEGRITY does not verify' };
  if (checkExpiry) {
    const nowSeconds = Math.floor(nowMs / 1000);
    if (id.expiry <= nowSeconds) return { ok: false, reason: 'expired-credentials', detail: 'credentials expired' };
    if (id.expiry > nowSeconds + maxSeconds) return { ok: false, reason: 'expired-credentials', detail: 'credentials valid for too long' };
  }
  return { ok: true, id, key };
}
