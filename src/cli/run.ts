import { InvalidArgumentError } from 'commander';
import { redactSecrets } from '../secrets.ts';
import { DistilleryError } from '../errors.ts';

/** Exit codes every script shares. */
export const EXIT = { ok: 0, error: 1, bug: 2, stopped: 3, interrupted: 130 } as const;

/** Values that must never be printed: every API key the process can see. */
function secrets(): string[] {
  return Object.entries(process.env)
    .filter(([k, v]) => v && /(_KEY|_TOKEN|SECRET)$/.test(k))
    .map(([, v]) => v!);
}

export function printError(e: unknown): void {
  const msg = e instanceof Error ? e.message : String(e);
  process.stderr.write(`error: ${redactSecrets(msg.split('\n')[0], secrets())}\n`);
}

/** Run a CLI's main: one redacted line on stderr and a non-zero exit on failure. */
export function runCli(main: () => Promise<number | void>): void {
  main().then(
    (code) => {
      process.exitCode = code ?? EXIT.ok;
    },
    (e: unknown) => {
      printError(e);
      process.exitCode = e instanceof DistilleryError ? EXIT.error : EXIT.bug;
    },
  );
}

/** Print to stdout with secrets masked (logs can end up anywhere). */
export function say(line: string): void {
  process.stdout.write(`${redactSecrets(line, secrets())}\n`);
}

export function log(line: string): void {
  process.stderr.write(`${redactSecrets(line, secrets())}\n`);
}

// ---- argument parsers for commander --------------------------------------

export function intArg(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`expected an integer from ${min} to ${max}`);
    return n;
  };
}

export function numberArg(min: number, max = Number.POSITIVE_INFINITY) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new InvalidArgumentError(`expected a number from ${min} to ${max}`);
    return n;
  };
}
