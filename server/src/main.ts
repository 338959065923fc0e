#!/usr/bin/env node
import { ConfigError, loadConfig, readEnvironment, type Config } from './config.js';
import { runCreateAdmin } from './cli/create-admin.js';
import { runDoctor } from './cli/doctor.js';
import { generateSecret } from './cli/gen-secret.js';
import { runMigrate } from './cli/migrate.js';
import { startWorker } from './cli/worker.js';
import { createLogger } from './platform/logger.js';
import { serve } from './serve.js';

const USAGE = `keel — the self-hosted backend for AI apps

usage: keel <command>

commands:
  serve        start the API and web console (default), with JOB_WORKERS background job workers
  worker       run background job workers only (JOB_WORKERS, at least 1), no HTTP
  migrate      apply pending database migrations (--status: list them, change nothing)
  doctor       check configuration, database and services; explain what is wrong
  create-admin --email a@b.c [--password …]
               create a verified administrator, or promote an existing user; the password
               comes from KEEL_ADMIN_PASSWORD or --password, else one is generated and printed once
  gen-secret   print a new random SECRET_KEY
  help         show this text

Configuration comes from the environment and an optional .env file (docs/configuration.md).`;

async function main(argv: string[]): Promise<number> {
  const [command = 'serve', ...args] = argv;
  switch (command) {
    case 'serve': {
      const config = configOrExit();
      const logger = createLogger(config);
      if (config.secretKeySource === 'generated') logger.warn({ file: `${config.dataDir}/secret.key` }, 'no SECRET_KEY set: generated a development secret and saved it in the data directory (set SECRET_KEY in production)');
      if (config.secretKeySource === 'file') logger.info({ file: `${config.dataDir}/secret.key` }, 'no SECRET_KEY set: using the development secret saved in the data directory');
      await serve(config, { logger, handleSignals: true });
      return -1;
    }
    case 'worker': {
      const config = configOrExit();
      if (config.jobs.workers < 1) {
        process.stderr.write('keel worker: JOB_WORKERS is 0; a worker needs at least 1 (0 is for an API-only `keel serve`).\n');
        return 78;
      }
      await startWorker(config, { logger: createLogger(config), handleSignals: true });
      return -1;
    }
    case 'migrate':
      return runMigrate(configOrExit(), args.includes('--status'));
    case 'doctor':
      return runDoctor(readEnvironment());
    case 'create-admin':
      return runCreateAdmin(configOrExit(), args, readEnvironment());
    case 'gen-secret':
      process.stdout.write(`${generateSecret()}\n`);
      return 0;
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      process.stderr.write(`keel: unknown command "${command}"\n\n${USAGE}\n`);
      return 64;
  }
}

function configOrExit(): Config {
  try {
    return loadConfig(readEnvironment());
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78);
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`keel: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
