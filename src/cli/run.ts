import { InvalidArgumentError } from 'commander';
import { redactSecrets } from '../secrets.ts';
import { DistilleryError, InputError, SettingError, settingMessage } from '../errors.ts';

/** Exit codes every script shares. */
export const EXIT = { ok: 0, error: 1, bug: 2, stopped: 3, interrupted: 130 } as const;

/** Values that must never be printed: every API key the process can see. */
function secrets(): string[] {
  return Object.entries(process.env)
    .filter(([k, v]) => v && /(_KEY|_TOKEN|SECRET)$/.test(k))
    .map(([, v]) => v!);
}

/**
 * Setting names (config fields in src/) whose flag is not simply the kebab-case
 * of the name. Everything else maps `kdTemperature` -> `--kd-temperature`.
 */
export const FLAG_OF_SETTING: Readonly<Record<string, string>> = {
  dbPath: '--db',
  taskArg: '--task',
  studentDir: '--student',
  studentDirs: '--student',
  outDir: '--out',
  inputPath: '--input',
  exportDir: '--input',
  softFormat: '--store',
  aggregate: '--aggregate',
  featureTeacherDir: '--feature-teacher',
  fromModelDir: '--from-model',
  initFromDir: '--init-from',
};

/** The flag a setting is spelled as on the command line. */
export function flagOf(setting: string): string {
  return FLAG_OF_SETTING[setting] ?? `--${setting.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
}

/** The one line a CLI prints for an error: settings spelled as flags. */
export function errorLine(e: unknown): string {
  if (e instanceof SettingError) return settingMessage(e, flagOf(e.setting));
  if (e instanceof InputError && e.setting) return `${e.message}; set ${flagOf(e.setting)}`;
  return e instanceof Error ? e.message : String(e);
}

export function printError(e: unknown): void {
  const msg = errorLine(e);
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
    if (v.trim() === '' || !Number.isFinite(n) || n < min || n > max)
      throw new InvalidArgumentError(`expected a number from ${min} to ${max}`);
    return n;
  };
}
