/** An error the user caused or can fix: shown as one line, exit code 2 (invalid input) or 1. */
export class SklError extends Error {
  override name = 'SklError';
  constructor(
    message: string,
    /** 2: invalid input (flags, values); 1: the operation failed. */
    readonly exitCode: 1 | 2 = 1,
  ) {
    super(message);
  }
}

/** Invalid input: exit code 2. */
export class UsageError extends SklError {
  override name = 'UsageError';
  constructor(message: string) {
    super(message, 2);
  }
}
