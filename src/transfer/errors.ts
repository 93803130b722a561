/**
 * The errors `burrow send` and `burrow receive` can end with, worded in one place. Codes come from
 * src/errors.ts: FILE_EXISTS (exit 2) and FILE_FAILED (exit 1) for files, STREAM_BROKEN (6) when the
 * peer broke the protocol or went away; STREAM_TAMPERED (7) comes from the stream itself.
 */
import { BurrowError } from '../errors.js';
import type { FailReason } from './codec.js';
import type { RemoteError } from './session.js';

function reasonOf(cause: unknown): string {
  if (cause instanceof Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    return code !== undefined ? `${code}: ${cause.message.replace(/^[A-Z]+: /, '')}` : cause.message;
  }
  return String(cause);
}

export const TransferError = {
  /** A name the receiver may not replace (local: before any data moved, or at rename time). */
  exists(path: string): BurrowError {
    return new BurrowError(
      'FILE_EXISTS',
      `"${path}" already exists, so the transfer was refused and nothing was written under that name. ` +
        'Run `burrow receive` again with --force to replace it, or with --out DIR to receive into another directory.',
    );
  },

  /** The receiver refused (we are the sender). */
  refused(peer: string, reason: FailReason, name: string | undefined, detail: string): BurrowError {
    const file = name !== undefined ? `"${name}"` : 'the files';
    switch (reason) {
      case 'exists':
        return new BurrowError(
          'FILE_EXISTS',
          `"${peer}" already has a file named ${file} and refused to replace it. ` +
            'Ask them to run `burrow receive` with --force to replace it, or with --out DIR to receive elsewhere; or rename the file.',
        );
      case 'write-failed':
        return new BurrowError('FILE_FAILED', `"${peer}" could not store ${file}: ${detail}. Ask them to check free space and permissions of their output directory, then send again.`);
      case 'hash-mismatch':
        return new BurrowError('FILE_FAILED', `"${peer}" received ${file} but what it wrote did not match what we read (end-to-end check), so it was discarded: ${detail}. Send again.`);
      case 'protocol':
        return BurrowError.streamBroken(peer, `the receiver refused what we sent: ${detail} (are both sides running the same version of burrow?)`);
      case 'declined':
        return new BurrowError('ABORTED', `"${peer}" declined the transfer; nothing was written there. Check with them what they expect, then send again.`);
    }
  },

  /** We (the receiver) declined at the prompt. */
  declined(): BurrowError {
    return new BurrowError('ABORTED', 'you declined the transfer; nothing was written and the sender was told.');
  },

  /** A directory of the transfer exists here as something else (a file, a symbolic link). */
  notADirectory(path: string, why: string): BurrowError {
    return new BurrowError(
      'FILE_EXISTS',
      `"${path}" should be a directory, but ${why}, so the transfer was refused and nothing was written. ` +
        'Move it away, or run `burrow receive` with --out DIR to receive into another directory.',
    );
  },

  /** The peer broke the transfer protocol (authenticated, so a bug or another version). */
  remote(peer: string, error: RemoteError): BurrowError {
    if (error.problem === 'unsafe-name') {
      return new BurrowError('FILE_FAILED', `refused the transfer: ${error.detail}, which could write outside the output directory. Nothing was written.`);
    }
    return BurrowError.streamBroken(peer, error.detail);
  },

  /** Local IO on the receiving side failed. */
  writeFailed(path: string, cause: unknown): BurrowError {
    return new BurrowError(
      'FILE_FAILED',
      `cannot write "${path}": ${reasonOf(cause)}. Check free space and permissions of the output directory, then run both sides again.`,
      { cause },
    );
  },

  hashMismatch(path: string): BurrowError {
    return new BurrowError(
      'FILE_FAILED',
      `"${path}": the bytes written here did not match what the sender read (end-to-end check), so it was discarded. ` +
        'The stream authenticates every byte between the two sides, so this points at failing memory or a fault on either machine; run both sides again.',
    );
  },

  /** Local IO on the sending side failed, or the file changed under us. */
  readFailed(path: string, cause: unknown): BurrowError {
    return new BurrowError('FILE_FAILED', `cannot read "${path}": ${reasonOf(cause)}. Check the file, then send again.`, { cause });
  },

  changed(path: string): BurrowError {
    return new BurrowError(
      'FILE_FAILED',
      `"${path}" changed size while it was being sent, so the transfer was stopped and the receiver discarded it. ` +
        'Send it again once nothing is writing to it.',
    );
  },

  /** The signal aborted (SIGINT, SIGTERM). */
  interrupted(side: 'sender' | 'receiver'): BurrowError {
    return new BurrowError(
      'ABORTED',
      side === 'receiver'
        ? 'the transfer was interrupted. Files already verified are in place; the one in progress is kept as a hidden ' +
          '.burrow-*.part file next to its name (never under its name). Run both sides again to resume it.'
        : 'the transfer was interrupted before the receiver confirmed every file; it keeps the files it verified and the ' +
          'part of the current one that arrived. Run both sides again: the next run resumes where this one stopped.',
    );
  },

  /** The stream closed without an error while the transfer was still running. */
  closed(peer: string): BurrowError {
    return BurrowError.streamBroken(peer, 'the connection closed before the transfer finished');
  },

  /** Used for the FAIL frame's detail. */
  reasonOf,
};
