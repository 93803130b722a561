/**
 * `RedisSharedState`: the shared state of src/server/shared.ts over one Redis, so that any number of `burrow serve`
 * processes, on any machines, serve one network (`burrow serve --redis URL`). docs/protocol.md ("Scaling out: the
 * Redis store") lists its keys and shows an introduction across two servers.
 *
 *  - Registrations: one key per registration (JSON), expiring with it (`PX`, its own lifetime). Register and find the
 *    partner is one Lua script (scripts.ts), so two servers racing never lose an introduction.
 *  - Replay guard: one key per fingerprint (`SET … NX PX 2×window`), in a script with the store's epoch (the moment
 *    the store was found empty): a request older than it is refused as stale, since the fingerprints it would be
 *    checked against are gone.
 *  - Router: each server SUBSCRIBEs to its own channel; a push is PUBLISHed to the owner's. PUBLISH returns how many
 *    listened: none means the owner is gone, and the partner is treated as absent.
 *  - WireGuard registry: one hash per interface, expiring a record lifetime after it was last touched.
 *  - WG-PROOF-KEY: derived from the network secrets and a random salt kept in Redis. The salt alone is no secret
 *    (nothing can be proven with it); the secrets never go to Redis; and no member of a network, who knows the
 *    secret but not the salt, can compute the key.
 *
 * The connection: node-redis with `disableOfflineQueue` (while Redis is down, commands fail at once rather than
 * queue: REGISTERs are answered 503 "store unavailable" and clients exit 14), a timeout on every command, an error
 * listener, and reconnection with a backoff capped at one second, so that the server recovers by itself. At start-up,
 * an unreachable Redis fails `connect` at once, naming the URL.
 */
import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { createClient } from 'redis';
import type { Endpoint } from '../../codec/address.js';
import type { WgPeerInfo } from '../../codec/wg-messages.js';
import { keyPairOf, type KeyPair } from '../../crypto/wireguard.js';
import { BurrowError } from '../../errors.js';
import type { ReplayGuard, ReplayVerdict } from '../../server/replay.js';
import type { PushListener, Router } from '../../server/router.js';
import type { SharedState } from '../../server/shared.js';
import type { RegisterResult, Registration, RegistrationStore } from '../../server/store.js';
import type { Owner, Push, WgFacts } from '../../server/types.js';
import { DEFAULT_WG_LIMITS } from '../../server/wg.js';
import type { WgRegistry } from '../../server/wg-registry.js';
import type { EffectOutcome } from '../../server/machine.js';
import type { Effect, Guard } from '../../server/types.js';
import { GUARD_SCRIPT, GUARDED_REGISTER_SCRIPT, REGISTER_SCRIPT, WG_TOUCH_SCRIPT, WITHDRAW_SCRIPT } from './scripts.js';

export const DEFAULT_REDIS_PREFIX = 'burrow';
/** A command that takes longer fails (the REGISTER it serves is answered 503). */
export const DEFAULT_COMMAND_TIMEOUT_MS = 1000;
/** How long the first connection may take. */
const CONNECT_TIMEOUT_MS = 3000;
/** The reconnection backoff: 50 ms doubling to this cap, so a Redis that returns is found within about a second. */
const RECONNECT_CAP_MS = 1000;

export interface RedisSharedStateOptions {
  /** redis://[[USER]:PASSWORD@]HOST:PORT[/DB] (or rediss:// for TLS). */
  readonly url: string;
  /** Every key and channel starts with `PREFIX:`; servers of one deployment use the same. Default "burrow". */
  readonly prefix?: string;
  /** The network secrets this server serves: the WG-PROOF-KEY is derived from them (they never go to Redis). */
  readonly secrets: readonly Uint8Array[];
  /** The timestamp window (ms): fingerprints are kept twice as long. */
  readonly timestampWindowMs: number;
  /** How long a WireGuard interface record lives untouched (default: DEFAULT_WG_LIMITS.peerLifetimeMs). */
  readonly wgLifetimeMs?: number;
  readonly commandTimeoutMs?: number;
  /** The connection went down (with why) or came back. */
  readonly onStatus?: (status: 'down' | 'up', detail: string) => void;
}

type Client = ReturnType<typeof createClient>;

/** The URL without its password, for messages and logs. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return url;
  }
}

export class RedisSharedState implements SharedState {
  readonly store: RedisStore;
  readonly replays: RedisReplayGuard;
  readonly router: RedisRouter;
  readonly wg: RedisWgRegistry;
  private key: KeyPair | undefined;

  private constructor(
    private readonly client: Client,
    private readonly subscriber: Client,
    private readonly keys: Keys,
    private readonly options: RedisSharedStateOptions,
  ) {
    const scripts = new Scripts(client);
    this.store = new RedisStore(client, scripts, keys);
    this.replays = new RedisReplayGuard(scripts, keys, 2 * options.timestampWindowMs);
    this.router = new RedisRouter(client, subscriber, keys);
    this.wg = new RedisWgRegistry(client, scripts, keys, options.wgLifetimeMs ?? DEFAULT_WG_LIMITS.peerLifetimeMs);
  }

  /** Connects (both connections: commands, and Pub/Sub); fails at once, naming the URL, when Redis is unreachable. */
  static async connect(options: RedisSharedStateOptions): Promise<RedisSharedState> {
    const shown = redactRedisUrl(options.url);
    let ready = false;
    let down = false;
    const status = (s: 'down' | 'up', detail: string): void => {
      // Before the first connection, a failure is the start-up's error, not a status change.
      if (!ready || (s === 'down') === down) return;
      down = s === 'down';
      options.onStatus?.(s, detail);
    };
    let client: Client;
    try {
      client = createClient({
        url: options.url,
        disableOfflineQueue: true,
        commandOptions: { timeout: options.commandTimeoutMs ?? DEFAULT_COMMAND_TIMEOUT_MS },
        socket: {
          connectTimeout: CONNECT_TIMEOUT_MS,
          // Before the first connection: give up at once (start-up fails, naming the URL). After: keep trying.
          reconnectStrategy: (retries: number, cause: Error) => (ready ? Math.min(50 * 2 ** retries, RECONNECT_CAP_MS) : cause),
        },
      });
    } catch (err) {
      throw BurrowError.invalidOption('redis', `not a Redis URL (${err instanceof Error ? err.message : String(err)})`, shown);
    }
    const subscriber = client.duplicate();
    // node-redis exits the process on an 'error' without a listener; the errors are reported as status changes.
    client.on('error', (err: unknown) => { status('down', describe(err)); });
    subscriber.on('error', () => undefined);
    client.on('ready', () => { status('up', shown); });
    // Pub/Sub resubscribes by itself when it reconnects; its errors show on the command connection too.
    try {
      await client.connect();
      await subscriber.connect();
    } catch (err) {
      client.destroy();
      subscriber.destroy();
      throw storeUnreachable(shown, err);
    }
    ready = true;
    const prefix = options.prefix ?? DEFAULT_REDIS_PREFIX;
    const state = new RedisSharedState(client, subscriber, new Keys(prefix), options);
    try {
      // A new (or emptied) store starts its epoch now; the guard script also notices one emptied later.
      await client.sendCommand(['SET', state.keys.epoch, String(Date.now()), 'NX']);
    } catch (err) {
      state.close();
      throw storeUnreachable(shown, err);
    }
    return state;
  }

  /** The key every server derives alike: the network secrets with the salt shared through Redis (made by the first). */
  async proofKey(): Promise<KeyPair> {
    if (this.key) return this.key;
    await this.client.sendCommand(['SET', this.keys.proofSalt, randomBytes(32).toString('hex'), 'NX']);
    const salt = await this.client.sendCommand(['GET', this.keys.proofSalt]);
    if (typeof salt !== 'string') throw new Error('the WG-PROOF-KEY salt vanished from Redis');
    const ikm = createHash('sha256');
    for (const s of [...this.options.secrets].map((b) => Buffer.from(b)).sort((a, b) => Buffer.compare(a, b))) ikm.update(createHash('sha256').update(s).digest());
    this.key = keyPairOf(new Uint8Array(hkdfSync('sha256', ikm.digest(), Buffer.from(salt, 'hex'), 'burrow/v1 wg-proof-key', 32)));
    return this.key;
  }

  /** A guarded REGISTER: the replay guard and register-and-find-partner in one script, one round trip. */
  guarded(effect: Effect, guard: Guard): Promise<EffectOutcome> | undefined {
    if (effect.op !== 'register') return undefined;
    return this.store.registerGuarded(effect.registration, effect.now, effect.refresh === true, guard, this.keys, this.replays.rememberMs);
  }

  /** Whether the command connection is up. */
  get connected(): boolean {
    return this.client.isReady;
  }

  /** Redis's memory use, and how many registrations it holds (SCAN; for tests and the benchmark). */
  async usage(): Promise<{ usedMemory: number; registrations: number }> {
    const reply: unknown = await this.client.sendCommand(['INFO', 'memory']);
    const info = typeof reply === 'string' ? reply : Buffer.isBuffer(reply) ? reply.toString() : '';
    const used = /used_memory:(\d+)/.exec(info);
    let registrations = 0;
    let cursor = '0';
    do {
      const reply = (await this.client.sendCommand(['SCAN', cursor, 'MATCH', `${this.keys.prefix}:reg:*`, 'COUNT', '1000'])) as unknown as [string, string[]];
      cursor = reply[0];
      registrations += reply[1].length;
    } while (cursor !== '0');
    return { usedMemory: Number(used?.[1] ?? 0), registrations };
  }

  close(): void {
    this.client.destroy();
    this.subscriber.destroy();
  }
}

function storeUnreachable(url: string, err: unknown): BurrowError {
  return new BurrowError('STORE_UNAVAILABLE', `cannot reach the Redis store at ${url}: ${describe(err)}. ` +
    'Check that redis-server runs there and that this machine may connect to it (bind address, firewall, password)', { details: { url } });
}

class Keys {
  readonly epoch: string;
  readonly proofSalt: string;
  constructor(readonly prefix: string) {
    this.epoch = `${prefix}:epoch`;
    this.proofSalt = `${prefix}:wg-proof-salt`;
  }
  registration(network: string, name: string): string {
    return `${this.prefix}:reg:${network}:${name}`;
  }
  replay(fingerprint: Uint8Array): string {
    return `${this.prefix}:replay:${Buffer.from(fingerprint).toString('hex')}`;
  }
  wg(network: string, key: Uint8Array): string {
    return `${this.prefix}:wg:${network}:${Buffer.from(key).toString('base64')}`;
  }
  channel(server: string): string {
    return `${this.prefix}:push:${server}`;
  }
}

/** EVALSHA, falling back to EVAL when Redis does not know the script (first use, or after a restart). */
class Scripts {
  private readonly shas = new Map<string, string>();
  constructor(private readonly client: Client) {}

  async run(script: string, keys: readonly string[], args: readonly string[]): Promise<unknown> {
    let sha = this.shas.get(script);
    if (sha === undefined) {
      sha = createHash('sha1').update(script).digest('hex');
      this.shas.set(script, sha);
    }
    try {
      return await this.client.sendCommand(['EVALSHA', sha, String(keys.length), ...keys, ...args]);
    } catch (err) {
      if (!describe(err).startsWith('NOSCRIPT')) throw err;
      return await this.client.sendCommand(['EVAL', script, String(keys.length), ...keys, ...args]);
    }
  }
}

class RedisStore implements RegistrationStore {
  constructor(
    private readonly client: Client,
    private readonly scripts: Scripts,
    private readonly keys: Keys,
  ) {}

  async register(reg: Registration, now: number, refresh = false): Promise<RegisterResult> {
    const ttl = Math.max(1, Math.ceil(reg.expiresAt - now));
    const reply = (await this.scripts.run(REGISTER_SCRIPT, [this.keys.registration(reg.network, reg.name), this.keys.registration(reg.network, reg.target)], [JSON.stringify(reg), String(ttl), reg.nonce, refresh ? '1' : '0'])) as [string, string, number];
    const previous = parseRegistration(reply[0]);
    if (reply[2] === 1) return { previous, partner: undefined, evicted: 0, superseded: true };
    // Redis bounds the store by its memory (maxmemory, docs): nothing is evicted here.
    return { previous, partner: parseRegistration(reply[1]), evicted: 0 };
  }

  async registerGuarded(reg: Registration, now: number, refresh: boolean, guard: Guard, keys: Keys, rememberMs: number): Promise<EffectOutcome> {
    const ttl = Math.max(1, Math.ceil(reg.expiresAt - now));
    const reply = (await this.scripts.run(GUARDED_REGISTER_SCRIPT,
      [keys.epoch, keys.replay(guard.fingerprint), keys.registration(reg.network, reg.name), keys.registration(reg.network, reg.target)],
      [String(Math.floor(guard.now)), guard.timestamp === undefined ? '' : String(Math.floor(guard.timestamp)), String(rememberMs), JSON.stringify(reg), String(ttl), reg.nonce, refresh ? '1' : '0'])) as [string, string?, string?, number?];
    const verdict = reply[0];
    if (verdict === 'replay' || verdict === 'stale') return { refused: verdict };
    if (verdict !== 'fresh') throw new Error(`unexpected answer from the register script: ${verdict}`);
    const previous = parseRegistration(reply[1]);
    if (reply[3] === 1) return { value: { previous, partner: undefined, evicted: 0, superseded: true } };
    return { value: { previous, partner: parseRegistration(reply[2]), evicted: 0 } };
  }

  async lookup(network: string, name: string): Promise<Registration | undefined> {
    return parseRegistration(await this.client.sendCommand(['GET', this.keys.registration(network, name)]));
  }

  async withdraw(network: string, name: string, nonce: string, owner: Owner | undefined): Promise<Registration | undefined> {
    const channel = owner?.channel;
    const args = [nonce, owner?.server ?? '', channel?.kind ?? '', channel?.kind === 'tcp' ? String(channel.conn) : ''];
    return parseRegistration(await this.scripts.run(WITHDRAW_SCRIPT, [this.keys.registration(network, name)], args));
  }
}

function parseRegistration(value: unknown): Registration | undefined {
  if (typeof value !== 'string' || value === '') return undefined;
  return JSON.parse(value) as Registration;
}

class RedisReplayGuard implements ReplayGuard {
  constructor(
    private readonly scripts: Scripts,
    private readonly keys: Keys,
    readonly rememberMs: number,
  ) {}

  async checkAndInsert(fingerprint: Uint8Array, now: number, timestamp?: number): Promise<ReplayVerdict> {
    const verdict = await this.scripts.run(GUARD_SCRIPT, [this.keys.epoch, this.keys.replay(fingerprint)], [String(Math.floor(now)), timestamp === undefined ? '' : String(Math.floor(timestamp)), String(this.rememberMs)]);
    if (verdict === 'fresh' || verdict === 'replay' || verdict === 'stale') return verdict;
    throw new Error(`unexpected replay guard answer ${String(verdict)}`);
  }
}

interface WirePush extends Omit<Push, 'data'> {
  readonly data: string;
}

class RedisRouter implements Router {
  constructor(
    private readonly client: Client,
    private readonly subscriber: Client,
    private readonly keys: Keys,
  ) {}

  async deliver(push: Push): Promise<boolean> {
    const wire: WirePush = { ...push, data: Buffer.from(push.data).toString('base64') };
    const receivers = await this.client.sendCommand(['PUBLISH', this.keys.channel(push.owner.server), JSON.stringify(wire)]);
    return typeof receivers === 'number' && receivers > 0;
  }

  async listen(server: string, listener: PushListener): Promise<() => void> {
    const channel = this.keys.channel(server);
    const onMessage = (message: string): void => {
      let push: Push;
      try {
        const wire = JSON.parse(message) as WirePush;
        push = { ...wire, data: new Uint8Array(Buffer.from(wire.data, 'base64')) };
      } catch {
        return; // not ours: only servers publish here
      }
      listener(push);
    };
    // A second server under the same id would take half of every push: refuse to start as one.
    const listening = (await this.client.sendCommand(['PUBSUB', 'NUMSUB', channel])) as unknown as [string, number];
    if (listening[1] > 0) throw BurrowError.invalidOption('server-id', `another server already runs under id "${server}" on this Redis (prefix "${this.keys.prefix}")`, server);
    await this.subscriber.subscribe(channel, onMessage);
    return () => {
      if (this.subscriber.isOpen) this.subscriber.unsubscribe(channel).catch(() => undefined);
    };
  }
}

class RedisWgRegistry implements WgRegistry {
  constructor(
    private readonly client: Client,
    private readonly scripts: Scripts,
    private readonly keys: Keys,
    private readonly lifetimeMs: number,
  ) {}

  async announce(network: string, key: Uint8Array, facts: WgFacts, now: number): Promise<undefined> {
    await this.scripts.run(WG_TOUCH_SCRIPT, [this.keys.wg(network, key)], [String(this.lifetimeMs), 'a', String(now), 'lp', String(facts.listenPort), 'h', JSON.stringify(facts.hosts), 'm', facts.mapping, 't', String(now)]);
    return undefined;
  }

  async setEndpoint(network: string, key: Uint8Array, endpoint: Endpoint, now: number): Promise<undefined> {
    await this.scripts.run(WG_TOUCH_SCRIPT, [this.keys.wg(network, key)], [String(this.lifetimeMs), 'e', JSON.stringify(endpoint), 'c', String(now), 't', String(now)]);
    return undefined;
  }

  async lookup(network: string, keys: readonly Uint8Array[], now: number): Promise<WgPeerInfo[]> {
    const records = await Promise.all(keys.map((k) => this.client.sendCommand<unknown>(['HGETALL', this.keys.wg(network, k)])));
    return keys.map((key, i) => {
      const r = fieldsOf(records[i]);
      const announcedAt = r.a !== undefined ? Number(r.a) : undefined;
      const confirmedAt = Number(r.c ?? 0);
      const endpointLive = r.e !== undefined && now - confirmedAt < this.lifetimeMs;
      return {
        key: new Uint8Array(key),
        announced: announcedAt !== undefined && now - announcedAt < this.lifetimeMs,
        endpoint: endpointLive && r.e !== undefined ? (JSON.parse(r.e) as Endpoint) : undefined,
        ageSeconds: endpointLive ? Math.max(0, Math.floor((now - confirmedAt) / 1000)) : 0,
        listenPort: Number(r.lp ?? 0),
        hosts: r.h !== undefined ? (JSON.parse(r.h) as Endpoint[]) : [],
        mapping: (r.m ?? 'unknown') as WgFacts['mapping'],
      };
    });
  }
}

/** HGETALL's answer (RESP2: a flat list of field, value) as a record. */
function fieldsOf(reply: unknown): Record<string, string | undefined> {
  const out: Record<string, string | undefined> = {};
  if (Array.isArray(reply)) {
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
  } else if (reply && typeof reply === 'object') {
    for (const [k, v] of Object.entries(reply)) out[k] = String(v);
  }
  return out;
}

function describe(err: unknown): string {
  if (err instanceof AggregateError && err.errors.length > 0) return err.errors.map(describe).join('; ');
  return err instanceof Error ? err.message || err.name : String(err);
}
