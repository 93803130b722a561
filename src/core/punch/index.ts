/** The punch agent and its parts (see agent.ts for the theory of operation). */
export { PunchAgent } from './agent.js';
export * from './types.js';
export { candidatePriority, asHostCandidates, pairPriority, pathOf, udpTransport, TYPE_PREFERENCE, MAX_PEER_REFLEXIVE, type RemoteCandidate } from './candidates.js';
export { PATH_RANK, type Pair, type PairState } from './checklist.js';
export { acceptanceWait } from './nomination.js';
export { describeNoPath, describeRelay, punchFailureError, punchFailureOf, type RelayReport, type FailureStage, type PairReport, type PunchFailure, type TcpAttemptStats } from './failure.js';
export { BirthdayGate, BirthdayProber, DEFAULT_BIRTHDAY, WindowPacer, birthdayRole, hardWindowMs, hitProbability, shuffledPorts, type BirthdayOptions } from './birthday.js';
