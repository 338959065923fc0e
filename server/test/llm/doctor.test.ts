import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSqliteDatabase, type TestDatabase } from '../helpers/databases.js';
import { FAKE_ANTHROPIC_SECRET, startFakeAnthropic, type FakeAnthropic } from '../helpers/fake-anthropic.js';
import { startFakeOpenAI, type FakeOpenAI } from '../helpers/fake-openai.js';
import { runKeel } from '../helpers/process.js';
import { closedPort, writeKeelConfig, type ConfigFile } from './llm-helpers.js';

/**
 * `keel doctor` asks every configured LLM provider whether it answers (a real child process against
 * fake upstreams): a ✓ line naming the provider when it does, a ✗ "does not answer" line and exit 1
 * when it does not — without ever printing the provider key.
 */

const SECRET_KEY = 'doctor-secret-0123456789abcdefghijklmnopqrstuvwxyz';
const UPSTREAM_KEY = 'sk-doctor-upstream-0123456789abcdef';
const ANTHROPIC_KEY = 'sk-ant-doctor-0123456789abcdef';

// Each test is its own child process (about 2 s of start-up), so they run side by side.
describe.concurrent('keel doctor checks the LLM providers', () => {
  let db: TestDatabase;
  let openai: FakeOpenAI;
  let anthropic: FakeAnthropic;
  let file: ConfigFile;
  /** The environment of one doctor run, with a database file of its own. */
  const base = (label: string): Record<string, string> => ({ DATABASE_URL: `${db.dataDir}/doctor-${label}.db`, DATA_DIR: db.dataDir, SECRET_KEY, LLM_MAX_RETRIES: '0' });

  beforeAll(async () => {
    db = await createSqliteDatabase();
    openai = await startFakeOpenAI({ apiKey: UPSTREAM_KEY });
    anthropic = await startFakeAnthropic({ apiKey: ANTHROPIC_KEY });
    file = writeKeelConfig({
      providers: { claude: { kind: 'anthropic', base_url: anthropic.url, api_key_env: 'DOCTOR_ANTHROPIC_KEY', max_retries: 0 } },
      models: { sonnet: { provider: 'claude', model: 'claude-test' } },
    });
  });
  afterAll(async () => {
    await openai?.close();
    await anthropic?.close();
    file?.remove();
    await db?.cleanup();
  });

  it('an OpenAI-compatible upstream that answers: a ✓ line naming the provider, exit 0, the key sent but never printed', async () => {
    const port = new URL(openai.url).port;
    const r = await runKeel(['doctor'], { ...base('ok'), LLM_BASE_URL: openai.url, LLM_API_KEY: UPSTREAM_KEY, LLM_MODEL: 'fake-model' });
    expect(r.stdout).toContain(`✓ LLM provider default: default (127.0.0.1:${port}) answers`);
    expect(r.stdout).toContain('No problems found.');
    expect(r.code).toBe(0);
    const asked = openai.requests.filter((q) => q.method === 'GET' && q.path === '/v1/models');
    // (the wrong-key test may be asking at the same time)
    expect(asked.some((q) => q.headers.authorization === `Bearer ${UPSTREAM_KEY}`)).toBe(true);
    expect(r.stdout + r.stderr).not.toContain(UPSTREAM_KEY);
  });

  it('an upstream on a closed port: a ✗ "does not answer" line and exit 1', async () => {
    const port = await closedPort();
    const r = await runKeel(['doctor'], { ...base('closed'), LLM_BASE_URL: `http://127.0.0.1:${port}/v1`, LLM_MODEL: 'fake-model' });
    expect(r.stdout).toMatch(new RegExp(`✗ LLM provider default does not answer: .*127\\.0\\.0\\.1:${port}`));
    expect(r.stdout).toContain('1 problem(s) found.');
    expect(r.code).toBe(1);
  });

  it('an upstream that refuses the key: ✗ and exit 1, the key not printed', async () => {
    const r = await runKeel(['doctor'], { ...base('refused'), LLM_BASE_URL: openai.url, LLM_API_KEY: 'sk-wrong-doctor-key-0123456789', LLM_MODEL: 'fake-model' });
    expect(r.stdout).toMatch(/✗ LLM provider default does not answer: .*credentials/);
    expect(r.stdout).not.toContain('sk-wrong-doctor-key-0123456789');
    expect(r.code).toBe(1);
  });

  it('an Anthropic provider from keel.config: ✓ with its name when it answers; ✗ when its key is refused', async () => {
    const ok = await runKeel(['doctor'], { ...base('anthropic'), KEEL_CONFIG: file.path, DOCTOR_ANTHROPIC_KEY: ANTHROPIC_KEY });
    expect(ok.stdout).toMatch(/✓ LLM provider claude: Anthropic \(claude\) answered/);
    expect(ok.code).toBe(0);
    expect(anthropic.requests.at(-1)!.headers['x-api-key']).toBe(ANTHROPIC_KEY);

    const refused = await runKeel(['doctor'], { ...base('anthropic'), KEEL_CONFIG: file.path, DOCTOR_ANTHROPIC_KEY: 'sk-ant-wrong-0123456789' });
    expect(refused.stdout).toMatch(/✗ LLM provider claude does not answer: .*credentials/);
    expect(refused.stdout).not.toContain(FAKE_ANTHROPIC_SECRET);
    expect(refused.stdout).not.toContain('sk-ant-wrong-0123456789');
    expect(refused.code).toBe(1);
  });
});
