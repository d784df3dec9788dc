/**
 * Errors a user can act on. Every CLI prints `error: <message>` on one line and
 * exits non-zero for these; anything else is a bug and is printed the same way
 * (still one line, still redacted) with a different exit code.
 */
export class DistilleryError extends Error {
  override name = 'DistilleryError';
}

/** Bad input: names the file and, when known, the 1-based line (or row). */
export class InputError extends DistilleryError {
  override name = 'InputError';
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    readonly reason: string,
  ) {
    super(`${file}${line === undefined ? '' : `:${line}`}: ${reason}`);
  }
}

/** A request to the teacher that cannot succeed by retrying (bad key, unsupported parameter…). */
export class TeacherError extends DistilleryError {
  override name = 'TeacherError';
}

/** The run stopped on purpose: cost cap reached, or told to stop. */
export class BudgetExceeded extends DistilleryError {
  override name = 'BudgetExceeded';
}

/**
 * A setting with a value it cannot take. src/ names the setting as its config
 * field (`kdTemperature`) and never a flag: only the CLI layer knows flags, and
 * `printError` (src/cli/run.ts) turns the setting into one (`--kd-temperature`).
 */
export class SettingError extends DistilleryError {
  override name = 'SettingError';
  constructor(
    readonly setting: string,
    readonly value: unknown,
    readonly reason: string,
  ) {
    super(`${setting}${value === undefined ? '' : ` ${showValue(value)}`}: ${reason}`);
  }
}

function showValue(v: unknown): string {
  return typeof v === 'string' ? JSON.stringify(v) : Array.isArray(v) ? v.join(',') : String(v);
}

/** The message of a SettingError with its setting spelled as `name` (a flag, for a CLI). */
export function settingMessage(e: SettingError, name: string): string {
  return `${name}${e.value === undefined ? '' : ` ${showValue(e.value)}`}: ${e.reason}`;
}
