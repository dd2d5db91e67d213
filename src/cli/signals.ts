/** Long-running commands (attach --foreground, metrics --listen, apply --watch) end on these. */
export const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

/** Resolve with the first stop signal received (the process stays alive until then). */
export function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const keepAlive = setInterval(() => {}, 1 << 30);
    const on = (sig: NodeJS.Signals) => {
      clearInterval(keepAlive);
      for (const s of STOP_SIGNALS) process.removeListener(s, on);
      resolve(sig);
    };
    for (const s of STOP_SIGNALS) process.on(s, on);
  });
}
