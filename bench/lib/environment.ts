import { execFile } from 'node:child_process';
import { createRequire } from 'node:module';
import os from 'node:os';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface MachineInfo {
  readonly os: string;
  readonly cpuModel: string;
  readonly cpuCount: number;
  readonly totalMemoryGiB: number;
  readonly node: string;
}

export interface GitInfo {
  /** Short HEAD commit, or "unknown" outside a git checkout. */
  readonly commit: string;
  /** Paths `git status --porcelain` lists: the built server may include these uncommitted changes. */
  readonly changedPaths: number;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown CPU',
    cpuCount: cpus.length,
    totalMemoryGiB: Math.round((os.totalmem() / 1024 ** 3) * 10) / 10,
    node: process.version,
  };
}

export async function gitInfo(repoRoot: string): Promise<GitInfo> {
  try {
    const [head, status] = await Promise.all([
      run('git', ['rev-parse', '--short', 'HEAD'], { cwd: repoRoot }),
      run('git', ['status', '--porcelain'], { cwd: repoRoot }),
    ]);
    return {
      commit: head.stdout.trim(),
      changedPaths: status.stdout.split('\n').filter((line) => line.trim().length > 0).length,
    };
  } catch {
    return { commit: 'unknown', changedPaths: 0 };
  }
}

/** The version of an installed package (autocannon, for the record). */
export function packageVersion(name: string): string {
  try {
    const require = createRequire(import.meta.url);
    return (require(`${name}/package.json`) as { version: string }).version;
  } catch {
    return 'unknown';
  }
}
