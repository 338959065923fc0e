import type { Config } from '../config.js';
import { openDatabase } from '../db/database.js';
import { migrateToLatest, migrationStatus } from '../db/migrate.js';
import { AdminService } from '../modules/auth/admin.service.js';
import { AuthService } from '../modules/auth/auth.service.js';
import { ErasureRegistry } from '../platform/erasure.js';
import { AppError } from '../platform/errors.js';
import { createLogger } from '../platform/logger.js';
import { createMailer } from '../platform/mailer.js';

export const CREATE_ADMIN_USAGE = 'usage: keel create-admin --email <address> [--password <password>]\n(prefer KEEL_ADMIN_PASSWORD=… to --password, which other users of the machine can see; with neither, a strong password is generated and printed once)';

/** `--name value` or `--name=value`; undefined when absent, '' when given without a value. */
function option(args: readonly string[], name: string): string | undefined {
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === `--${name}`) return args[i + 1] !== undefined && !args[i + 1]!.startsWith('--') ? args[i + 1] : '';
    if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
}

/**
 * `keel create-admin --email a@b.c [--password …]`: creates a verified admin account, or promotes
 * (and re-enables) an existing one. The password comes from `--password`, else `KEEL_ADMIN_PASSWORD`,
 * else is generated and printed once. Migrates first when the server would (MIGRATE_ON_START). Exit 0
 * on success, 1 with a plain-words reason otherwise.
 */
export async function runCreateAdmin(
  config: Config,
  args: readonly string[],
  env: Record<string, string | undefined>,
  out: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
  err: (line: string) => void = (l) => process.stderr.write(`${l}\n`),
): Promise<number> {
  const email = option(args, 'email');
  if (!email) {
    err(`keel create-admin: --email is required.\n${CREATE_ADMIN_USAGE}`);
    return 1;
  }
  const password = option(args, 'password') || env.KEEL_ADMIN_PASSWORD || undefined;

  const logger = createLogger({ logLevel: 'warn' });
  const database = openDatabase(config.database, logger);
  try {
    if (config.database.migrateOnStart) {
      await migrateToLatest(database.db);
    } else if ((await migrationStatus(database.db)).pending.length > 0) {
      err('keel create-admin: the database has pending migrations; run `keel migrate` first.');
      return 1;
    }
    const auth = new AuthService(database.db, config, createMailer({ smtpUrl: config.smtpUrl, from: config.mailFrom, dataDir: config.dataDir, logger }), new ErasureRegistry(), logger);
    const result = await new AdminService(database.db, auth).ensureAdmin(email, password);
    const who = `${result.user.email} (id ${result.user.id})`;
    if (result.outcome === 'created') out(`Created the administrator ${who}.`);
    else if (result.outcome === 'promoted') out(`${who} is now an administrator.`);
    else out(`${who} was already an administrator.`);
    if (result.reenabled) out('The account had been disabled; it is enabled again.');
    if (result.generatedPassword) out(`Password (shown only now; store it safely): ${result.generatedPassword}`);
    else if (result.passwordSet) out('The password you gave is set.');
    else if (password) out('The account already had a password; it was kept. To change it, sign in and use POST /me/password, or POST /auth/password/forgot.');
    return 0;
  } catch (e) {
    if (e instanceof AppError && e.statusCode < 500) {
      err(`keel create-admin: ${e.message}`);
      return 1;
    }
    throw e;
  } finally {
    await database.close();
  }
}
