/**
 * Burrow's library API. Quiet: nothing here prints or exits; results and typed errors come back through
 * promises, progress through `onEvent`, and every call takes an AbortSignal.
 */
export {
  punch,
  punchPath,
  parseTurnUrl,
  type PunchOptions,
  type PunchEvent,
  type PunchResult,
  type PathOptions,
  type PathResult,
  type PathChange,
  type PunchSession,
  type RelayInfo,
  type RelayMode,
  type TurnServerOption,
} from './node/punch.js';
export { TurnClient, DEFAULT_TURN_TIMING, type TurnAction, type TurnInput, type TurnClientConfig, type TurnCredentials, type TurnFailure, type TurnTiming } from './core/turn/client.js';
export { RelayTransport, RelayAllocationError, type Allocation } from './node/relay-transport.js';
export { DEFAULT_PORT } from './codec/messages.js';
export { startServer, type ServerOptions, type RendezvousServer } from './node/server.js';
export type { MetricsOptions } from './node/metrics.js';
export { stunQuery, type StunQueryOptions } from './node/stun.js';
export { netcheck, type NetcheckOptions, type NetcheckReport, type NetcheckEvent } from './node/netcheck.js';
export { classifyMapping, classifyFiltering, classifyAllocation, pairPath, verdict, type NatFacts, type MappingBehaviour, type FilteringBehaviour, type PeerKind } from './core/nat/classify.js';
export { discoverWireGuard, type WireGuardOptions, type WgEvent, type WgDiscoveryResult, type WgPeerReport } from './node/wg.js';
export { connectStream, type StreamConnectOptions, type StreamConnection, type StreamRelayInfo, type StreamResult } from './node/tcp-punch.js';
export type { StreamRelayMode } from './core/tcp-punch.js';
export { cipherPreference, SecureStream, StreamVersionError, type SecureStreamOptions } from './node/secure-stream.js';
export { prepareSend, sendEntries, type PreparedSend, type SendEntry, type SendOptions } from './transfer/send.js';
export { receiveFiles, type Incoming, type ReceiveOptions } from './transfer/receive.js';
export type { TransferEvent, TransferSummary, TransferredFile } from './transfer/driver.js';
export { startTstunServer } from './node/tstun.js';
export { generateSecret, readSecretFile } from './node/secret.js';
export { BurrowError, ERROR_CODES, isBurrowError, type BindRole, type DetailValue, type ErrorCode, type ErrorDetails } from './errors.js';
export type { Endpoint } from './codec/address.js';
export type { Candidate, CandidateKind, NatMapping, NoticeKind, Outcome, PeerMode } from './codec/messages.js';
export { modesCompatible, partnerModeFor } from './codec/messages.js';
export {
  PunchAgent,
  punchFailureOf,
  udpTransport,
  type PunchConfig,
  type PunchInput,
  type PunchAction,
  type PunchMode,
  type PunchPath,
  type PunchTiming,
  type PunchFailure,
  type RelayReport,
  type RelayPolicy,
  type FailureStage,
  type TransportSpec,
  type Pair,
  type PairState,
} from './core/punch/index.js';
export type { ClientMachine, DriverInput, DriverAction, TransportId } from './core/machine.js';
export { runMachine, type MachineRun, type RunOptions } from './node/driver.js';
export { UdpTransport, StreamTransport, type DatagramTransport, type TransportHandlers } from './node/transport.js';
export type { ServerEvent, ServerLimits, ServerState, ServerStats } from './server/core.js';
export type { Registration, RegistrationStore, RegisterResult } from './server/store.js';
export type { SharedState } from './server/shared.js';
export type { ReplayGuard, ReplayVerdict } from './server/replay.js';
export type { Router, PushListener } from './server/router.js';
export type { WgRegistry } from './server/wg-registry.js';
export type { Owner, Channel, Push, WgFacts, Awaitable } from './server/types.js';
export type { UdpBackend } from './node/datagram-port.js';
