/**
 * Burrow's library API. Quiet: nothing here prints or exits; results and typed errors come back through
 * promises, progress through `onEvent`, and every call takes an AbortSignal.
 */
export { punch, DEFAULT_PORT, type PunchOptions, type PunchEvent, type PunchResult } from './node/punch.js';
export { startServer, type ServerOptions, type RendezvousServer } from './node/server.js';
export type { MetricsOptions } from './node/metrics.js';
export { stunQuery, type StunQueryOptions } from './node/stun.js';
export { discoverWireGuard, type WireGuardOptions, type WgEvent, type WgDiscoveryResult, type WgPeerReport } from './node/wg.js';
export { connectStream, type StreamConnectOptions, type StreamConnection } from './node/tcp-punch.js';
export { cipherPreference, SecureStream, StreamVersionError, type SecureStreamOptions } from './node/secure-stream.js';
export { prepareSend, sendEntries, type PreparedSend, type SendEntry, type SendOptions } from './transfer/send.js';
export { receiveFiles, type Incoming, type ReceiveOptions } from './transfer/receive.js';
export type { TransferEvent, TransferSummary, TransferredFile } from './transfer/driver.js';
export { startTstunServer } from './node/tstun.js';
export { generateSecret, readSecretFile } from './node/secret.js';
export { BurrowError, ExitCode, isBurrowError, type ErrorCode } from './errors.js';
export type { Endpoint } from './codec/address.js';
export type { NatMapping } from './codec/messages.js';
export type { PunchPath, PunchTiming } from './core/punch.js';
export type { ServerEvent, ServerLimits, ServerState, ServerStats } from './server/core.js';
export type { Registration, RegistrationStore } from './server/store.js';
