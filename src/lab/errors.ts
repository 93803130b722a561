/** Errors of the NAT lab harness. Each carries a stable code; the message says what happened and what to do next. */

export type LabErrorCode =
  /** The lab cannot run here: not root, not Linux, or `ip`/`nft`/`nsenter`/`conntrack` missing. */
  | 'LAB_UNAVAILABLE'
  /** A command the harness itself runs (ip, nft, sysctl, conntrack) failed. */
  | 'LAB_COMMAND_FAILED'
  /** Waiting for a process or its output took longer than allowed. */
  | 'LAB_TIMEOUT'
  /** Teardown left a namespace behind; the message names it and how to remove it by hand. */
  | 'LAB_TEARDOWN_INCOMPLETE'
  /** The lab was used after `destroy()`. */
  | 'LAB_DESTROYED'
  /** The Burrow CLI the scenario runs has not been built. */
  | 'LAB_CLI_MISSING'
  /** The rendezvous server did not come up. */
  | 'LAB_SERVER_FAILED';

export class LabError extends Error {
  readonly code: LabErrorCode;

  constructor(code: LabErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'LabError';
    this.code = code;
  }
}
