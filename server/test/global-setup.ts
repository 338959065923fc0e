import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { TestProject } from 'vitest/node';
import { findLeaks, readAll } from './helpers/leaks.js';

/**
 * Gives the run a directory where servers capture their logs and tests record the secrets they used;
 * afterwards fails the run (exit code 1) if any secret appears in any log line.
 */
export default function setup(project: TestProject): () => void {
  const root = mkdtempSync(path.join(tmpdir(), 'keel-suite-'));
  project.provide('keelTestDir', root);
  return () => {
    const { logs, secrets } = readAll(root);
    const leaks = findLeaks(logs, secrets);
    const lines = [...logs.values()].reduce((n, t) => n + t.split('\n').length - 1, 0);
    if (leaks.length > 0) {
      process.stderr.write(`\nSECRET LEAK CHECK FAILED: ${leaks.length} secret(s) the suite used appear in server logs:\n${leaks.slice(0, 20).map((l) => `  - ${l}`).join('\n')}\n`);
      process.exitCode = 1;
    } else {
      process.stdout.write(`\nsecret leak check: ${secrets.size} secrets used by the suite, none in ${lines} captured log lines (${logs.size} servers)\n`);
    }
    rmSync(root, { recursive: true, force: true });
  };
}
