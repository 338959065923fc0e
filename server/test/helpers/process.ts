import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { appendLog, logFile } from './leaks.js';

export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const MAIN = fileURLToPath(new URL('../../src/main.ts', import.meta.url));

export interface KeelProcess {
  readonly child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the URL from the "keel listening" log line. */
  listening(timeoutMs?: number): Promise<string>;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
}

/** Runs a TypeScript entry point (the CLI by default) as a real child process, from source via tsx. */
export function spawnKeel(args: string[], env: Record<string, string>, entry = MAIN): KeelProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', entry, ...args], {
    cwd: REPO_ROOT,
    // Only what the test passes: the developer's own environment must not leak into the process.
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  const file = logFile(`cli-${randomUUID()}`);
  child.stdout.on('data', (c: Buffer) => {
    out += c.toString();
    appendLog(file, c.toString());
  });
  child.stderr.on('data', (c: Buffer) => {
    err += c.toString();
    appendLog(file, c.toString());
  });
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? -1)));
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    exited,
    listening: (timeoutMs = 20_000) => new Promise<string>((resolve, reject) => {
      const started = Date.now();
      const poll = setInterval(() => {
        const match = /"url":"(http:\/\/[^"]+)".*"msg":"keel listening"/.exec(out);
        if (match) {
          clearInterval(poll);
          resolve(match[1]!);
        } else if (Date.now() - started > timeoutMs || child.exitCode !== null) {
          clearInterval(poll);
          reject(new Error(`keel did not start:\n${out}\n${err}`));
        }
      }, 50);
    }),
  };
}

/** Runs a CLI command to completion. */
export async function runKeel(args: string[], env: Record<string, string>): Promise<{ code: number | string; stdout: string; stderr: string }> {
  const p = spawnKeel(args, env);
  const code = await p.exited;
  return { code, stdout: p.stdout(), stderr: p.stderr() };
}
