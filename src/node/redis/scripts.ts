/**
 * The Lua scripts of the Redis shared state (src/node/redis/shared-state.ts). Each runs atomically inside Redis, so
 * two servers racing cannot interleave inside one: whichever of two partners registers second sees the first.
 * docs/protocol.md ("Scaling out: the Redis store") lists the keys they touch.
 */

/**
 * The replay guard, with the store's epoch. KEYS: epoch, replay key. ARGV: now (ms), the request's timestamp (ms, or
 * '' for none), how long to remember the fingerprint (ms).
 *
 * The epoch is the moment the store was found empty: a store restarted without its data (`--save ''`) has forgotten
 * every fingerprint, so a request older than that moment could be a replay and is refused ('stale'; the client
 * corrects its clock from the 438 answer and sends a fresh one). Without the epoch key the store is new or was
 * emptied: this request is the first to notice, and the epoch becomes now.
 */
export const GUARD_SCRIPT = `
local e = redis.call('GET', KEYS[1])
if not e then
  redis.call('SET', KEYS[1], ARGV[1])
  e = ARGV[1]
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) < tonumber(e) then return 'stale' end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return 'fresh' end
return 'replay'
`;

/**
 * Register and find the partner, in one step (RegistrationStore.register). KEYS: the registration's key, its
 * target's key. ARGV: the registration (JSON), its lifetime (ms), its session nonce, '1' for a refresh.
 * Returns { previous or '', partner or '', 1 if superseded }. A refresh that meets another session under the name
 * writes nothing (the displaced peer does not take its name back).
 */
export const REGISTER_SCRIPT = `
local prev = redis.call('GET', KEYS[1])
if ARGV[4] == '1' and prev then
  local p = cjson.decode(prev)
  if p.nonce ~= ARGV[3] then return { prev, '', 1 } end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local partner = redis.call('GET', KEYS[2])
return { prev or '', partner or '', 0 }
`;

/**
 * Withdraw a registration only if it is still session ARGV[1] (and, with ARGV[2] set, still held by that owner:
 * server ARGV[2], channel kind ARGV[3], TCP connection ARGV[4]). KEYS: the registration's key. Returns what it
 * deleted, or ''.
 */
export const WITHDRAW_SCRIPT = `
local cur = redis.call('GET', KEYS[1])
if not cur then return '' end
local r = cjson.decode(cur)
if r.nonce ~= ARGV[1] then return '' end
if ARGV[2] ~= '' then
  local o = r.owner
  if o.server ~= ARGV[2] or o.channel.kind ~= ARGV[3] then return '' end
  if ARGV[3] == 'tcp' and tostring(o.channel.conn) ~= ARGV[4] then return '' end
end
redis.call('DEL', KEYS[1])
return cur
`;

/**
 * Touch a WireGuard interface record: set the given fields and its expiry. KEYS: the record. ARGV: lifetime (ms),
 * then field, value pairs.
 */
export const WG_TOUCH_SCRIPT = `
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
`;

/**
 * A guarded REGISTER in one step and one round trip: the replay guard (as GUARD_SCRIPT) and, only if the request is
 * fresh, the register-and-find-partner (as REGISTER_SCRIPT). KEYS: epoch, replay key, the registration's key, its
 * target's key. ARGV: now, the request's timestamp, how long to remember the fingerprint, then REGISTER_SCRIPT's four.
 * Returns { verdict } or { 'fresh', previous or '', partner or '', 1 if superseded }.
 */
export const GUARDED_REGISTER_SCRIPT = `
local e = redis.call('GET', KEYS[1])
if not e then
  redis.call('SET', KEYS[1], ARGV[1])
  e = ARGV[1]
end
if ARGV[2] ~= '' and tonumber(ARGV[2]) < tonumber(e) then return { 'stale' } end
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[3]) then return { 'replay' } end
local prev = redis.call('GET', KEYS[3])
if ARGV[7] == '1' and prev then
  local p = cjson.decode(prev)
  if p.nonce ~= ARGV[6] then return { 'fresh', prev, '', 1 } end
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
local partner = redis.call('GET', KEYS[4])
return { 'fresh', prev or '', partner or '', 0 }
`;
