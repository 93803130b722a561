/** The NAT lab: emulated NATs in network namespaces, for tests, `bench:connect` and `burrow lab` (root only). */

export { UdpAgent, type Datagram, type Endpoint } from './agent.js';
export { LabError, type LabErrorCode } from './errors.js';
export { NAT_KINDS, isNatKind, lossRuleset, routerRuleset, type NatKind, type RouterRulesOptions } from './nat-rules.js';
export { HOST_NODES, LAB_NODES, ROUTER_NODES, planLab, type HostNode, type LabAddresses, type LabNode, type LabOptions, type LabPlan, type NodeAddresses, type RouterNode } from './plan.js';
export { LabProcess, type ProcessExit, type SpawnOptions } from './process.js';
export {
  DEFAULT_CLI,
  SERVER_ENDPOINT,
  isLabAddress,
  parsePunchOutput,
  runPunchScenario,
  type HandoffReport,
  type HandoffResult,
  type ParsedPunchOutput,
  type PeerResult,
  type PeerSide,
  type PunchOutput,
  type PunchScenarioOptions,
  type PunchScenarioResult,
} from './scenario.js';
export { createLab, labAvailable, type ExecOptions, type ExecResult, type Lab, type LabAvailability } from './topology.js';
