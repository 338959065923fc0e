// The deployment files in deploy/ checked against the code they deploy, without a Docker engine:
// the compose file, Dockerfile, systemd unit and proxy configs are parsed, and the environment they
// hand to Keel goes through Keel's own validation (and a real production-mode server).
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { parseEnv } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { CONFIG_VARIABLES, ConfigError, loadConfig } from '../../src/config.js';
import { serve, type RunningServer } from '../../src/serve.js';
import { DEFAULT_WEB_DIR } from '../../src/web.js';
import { REPO_ROOT, runKeel } from '../helpers/process.js';

const DEPLOY = path.join(REPO_ROOT, 'deploy');
const read = (...parts: string[]): string => readFileSync(path.join(REPO_ROOT, ...parts), 'utf8');
const KNOWN = new Set(CONFIG_VARIABLES.map((v) => v.name));
const defaultOf = (name: string): string => {
  const v = CONFIG_VARIABLES.find((c) => c.name === name);
  if (!v) throw new Error(`${name} is not in CONFIG_VARIABLES`);
  return v.default;
};

/** Values a real deployment would put in deploy/.env: a strong secret, real origins. */
const DEPLOY_VARS: Record<string, string> = {
  SECRET_KEY: randomBytes(32).toString('hex'),
  POSTGRES_PASSWORD: randomBytes(16).toString('hex'),
  CORS_ORIGINS: 'https://app.example.com,https://admin.example.com',
  KEEL_DOMAIN: 'keel.example.com',
};

// ---------------------------------------------------------------------------------------------
// compose.yaml

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  environment?: Record<string, string | number | boolean> | string[];
  ports?: unknown[];
  expose?: unknown[];
  volumes?: string[];
  depends_on?: Record<string, { condition?: string }> | string[];
  healthcheck?: { test: string[] | string };
  stop_grace_period?: string;
}
interface ComposeFile {
  services: Record<string, ComposeService>;
  volumes?: Record<string, unknown>;
}

const composeText = read('deploy', 'compose.yaml');
// Compose supports YAML merge keys (`<<: *keel`), so parse with them on.
const compose = parseYaml(composeText, { merge: true }) as ComposeFile;
const KEEL_SERVICES = ['keel-1', 'keel-2'];

/** Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $VAR, $$. */
function interpolate(value: string, vars: Record<string, string | undefined>): string {
  return value.replace(/\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g,
    (match: string, braced: string | undefined, op: string | undefined, arg: string | undefined, bare: string | undefined) => {
      if (match === '$$') return '$';
      const name = (braced ?? bare)!;
      const v = vars[name];
      const unsetOrEmpty = v === undefined || v === '';
      switch (op) {
        case ':-': return unsetOrEmpty ? (arg ?? '') : v;
        case '-': return v ?? arg ?? '';
        case ':?':
          if (unsetOrEmpty) throw new Error(`required variable ${name} is missing a value: ${arg ?? ''}`);
          return v;
        case '?':
          if (v === undefined) throw new Error(`required variable ${name} is missing: ${arg ?? ''}`);
          return v;
        default: return v ?? '';
      }
    });
}

/** Every variable compose.yaml interpolates, and which of them it requires (`:?`). */
function referencedVariables(text: string): { all: Set<string>; required: Set<string> } {
  const all = new Set<string>();
  const required = new Set<string>();
  for (const m of text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?/g)) {
    all.add(m[1]!);
    if (m[2] === ':?' || m[2] === '?') required.add(m[1]!);
  }
  return { all, required };
}

/** A service's environment as written (before interpolation), list or map form. */
function rawEnvironment(service: ComposeService): Record<string, string> {
  const env = service.environment ?? {};
  if (Array.isArray(env)) {
    return Object.fromEntries(env.map((line) => {
      const i = line.indexOf('=');
      return i < 0 ? [line, ''] : [line.slice(0, i), line.slice(i + 1)];
    }));
  }
  return Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)]));
}

function serviceEnvironment(name: string, vars: Record<string, string | undefined>): Record<string, string> {
  const service = compose.services[name];
  if (!service) throw new Error(`no service ${name}`);
  return Object.fromEntries(Object.entries(rawEnvironment(service)).map(([k, v]) => [k, interpolate(v, vars)]));
}

const envExample = parseEnv(read('deploy', '.env.example')) as Record<string, string>;

// ---------------------------------------------------------------------------------------------
// Dockerfile

interface Instruction { keyword: string; args: string }
interface Stage { from: string; name: string | undefined; instructions: Instruction[] }

/** Enough of the Dockerfile grammar for these files: comments, line continuations, global ARGs, stages. */
function parseDockerfile(text: string): { stages: Stage[] } {
  const logical: string[] = [];
  let pending = '';
  for (const raw of text.split('\n')) {
    if (/^\s*#/.test(raw)) continue; // comments, also inside a continuation
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = '';
    if (full) logical.push(full);
  }
  const globalArgs: Record<string, string> = {};
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, keyword = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line) ?? [];
    const kw = keyword.toUpperCase();
    if (kw === 'FROM') {
      const m = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args);
      const image = (m?.[1] ?? '').replace(/\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g, (_s, n: string) => globalArgs[n] ?? '');
      stages.push({ from: image, name: m?.[2], instructions: [] });
    } else if (stages.length === 0) {
      if (kw === 'ARG') {
        const [k, v = ''] = args.split('=');
        globalArgs[k!.trim()] = v.trim();
      }
    } else {
      stages.at(-1)!.instructions.push({ keyword: kw, args });
    }
  }
  return { stages };
}

function stageEnv(stage: Stage): Record<string, string> {
  const env: Record<string, string> = {};
  for (const i of stage.instructions.filter((x) => x.keyword === 'ENV')) {
    const tokens = i.args.split(/\s+/).filter(Boolean);
    if (!tokens[0]!.includes('=')) env[tokens[0]!] = tokens.slice(1).join(' ');
    else for (const t of tokens) env[t.slice(0, t.indexOf('='))] = t.slice(t.indexOf('=') + 1).replace(/^"(.*)"$/, '$1');
  }
  return env;
}

const only = (stage: Stage, keyword: string): Instruction[] => stage.instructions.filter((i) => i.keyword === keyword);
const execForm = (args: string): string[] => {
  const parsed = JSON.parse(args) as unknown;
  if (!Array.isArray(parsed) || !parsed.every((a) => typeof a === 'string')) throw new Error(`not exec form: ${args}`);
  return parsed;
};

const dockerfile = parseDockerfile(read('deploy', 'Dockerfile'));
const runtime = dockerfile.stages.at(-1)!;
const build = dockerfile.stages.find((s) => s.name === 'build')!;
const imageEnv = stageEnv(runtime);
const workdir = only(runtime, 'WORKDIR').at(-1)!.args;
const cmd = execForm(only(runtime, 'CMD').at(-1)!.args);

const rootPackage = JSON.parse(read('package.json')) as { scripts: Record<string, string> };
// "start": "npm run build && node server/dist/main.js serve": a build step, then the run command.
const startSteps = rootPackage.scripts.start!.split('&&').map((s) => s.trim());
const startBuildStep = startSteps[0]!;
const startCommand = startSteps.slice(1).join(' && ');

// ---------------------------------------------------------------------------------------------
// keel.service

function parseUnit(text: string): Record<string, Record<string, string[]>> {
  const sections: Record<string, Record<string, string[]>> = {};
  let current: Record<string, string[]> | undefined;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const section = /^\[(.+)\]$/.exec(line);
    if (section) {
      current = sections[section[1]!] = {};
      continue;
    }
    const i = line.indexOf('=');
    if (!current || i < 0) throw new Error(`unexpected line in unit: ${line}`);
    (current[line.slice(0, i).trim()] ??= []).push(line.slice(i + 1).trim());
  }
  return sections;
}

const unitText = read('deploy', 'keel.service');
const unit = parseUnit(unitText);
const service = unit.Service!;
const one = (key: string): string => {
  const v = service[key];
  if (!v || v.length === 0) throw new Error(`keel.service has no ${key}=`);
  return v.at(-1)!;
};
/** The example /etc/keel/keel.env in the unit's header comment (`#   KEY=value` lines). */
const unitEnvExample = Object.fromEntries([...unitText.matchAll(/^# {3}([A-Z][A-Z0-9_]*)=(.*)$/gm)].map((m) => [m[1]!, m[2]!.trim()]));

// ---------------------------------------------------------------------------------------------
// nginx.conf

interface NginxDirective { name: string; args: string[]; block?: NginxDirective[] }

function parseNginx(text: string): NginxDirective[] {
  const tokens: string[] = [];
  for (const m of text.matchAll(/#[^\n]*|"((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|([{};])|([^\s{};"'#]+)/g)) {
    if (m[0].startsWith('#')) continue;
    tokens.push(m[1] ?? m[2] ?? m[3] ?? m[4]!);
  }
  let i = 0;
  const block = (): NginxDirective[] => {
    const out: NginxDirective[] = [];
    while (i < tokens.length && tokens[i] !== '}') {
      const name = tokens[i++]!;
      const args: string[] = [];
      while (i < tokens.length && tokens[i] !== ';' && tokens[i] !== '{') args.push(tokens[i++]!);
      if (tokens[i] === '{') {
        i++;
        out.push({ name, args, block: block() });
        if (tokens[i++] !== '}') throw new Error(`unclosed block ${name}`);
      } else {
        if (tokens[i++] !== ';') throw new Error(`directive ${name} without ;`);
        out.push({ name, args });
      }
    }
    return out;
  };
  const top = block();
  if (i !== tokens.length) throw new Error('unbalanced }');
  return top;
}

const nginx = parseNginx(read('deploy', 'nginx.conf'));
const directives = (ds: readonly NginxDirective[], name: string): NginxDirective[] => ds.filter((d) => d.name === name);
const tlsServer = directives(nginx, 'server').find((s) => directives(s.block ?? [], 'listen').some((l) => l.args.includes('ssl')))!;
const locations = directives(tlsServer.block ?? [], 'location');
/** nginx inheritance: a directive set in the location wins, otherwise the server's applies. */
const effective = (loc: NginxDirective, name: string): NginxDirective[] => {
  const own = directives(loc.block ?? [], name);
  return own.length > 0 ? own : directives(tlsServer.block ?? [], name);
};
const proxied = locations.filter((l) => directives(l.block ?? [], 'proxy_pass').length > 0);
const seconds = (v: string): number => {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(v);
  if (!m) throw new Error(`not a duration: ${v}`);
  return Number(m[1]) * ({ ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] ?? 's'] ?? 1);
};

// ---------------------------------------------------------------------------------------------
// Caddyfile

const caddyfile = read('deploy', 'Caddyfile');
const caddyDirectives = caddyfile.split('\n').map((l) => l.replace(/#.*$/, '').trim()).filter(Boolean);

const onPath = (bin: string): boolean => spawnSync('sh', ['-c', `command -v ${bin}`]).status === 0;

// =============================================================================================

describe('deploy/compose.yaml', () => {
  it('has Postgres, Redis, two Keel instances and Caddy, and Postgres/Redis have health checks', () => {
    expect(Object.keys(compose.services).sort()).toEqual(['caddy', 'keel-1', 'keel-2', 'postgres', 'redis']);
    expect(compose.services.postgres!.image).toMatch(/^postgres:15/);
    expect(JSON.stringify(compose.services.postgres!.healthcheck?.test)).toContain('pg_isready');
    expect(compose.services.redis!.image).toMatch(/^redis:7/);
    expect(JSON.stringify(compose.services.redis!.healthcheck?.test)).toContain('ping');
    expect(compose.services.caddy!.image).toMatch(/^caddy:2/);
  });

  it('builds both Keel instances from deploy/Dockerfile with the repository root as context', () => {
    for (const name of KEEL_SERVICES) {
      const b = compose.services[name]!.build!;
      const context = path.resolve(DEPLOY, b.context);
      expect(context).toBe(path.resolve(REPO_ROOT));
      expect(path.resolve(context, b.dockerfile)).toBe(path.join(DEPLOY, 'Dockerfile'));
      // BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile.
      expect(existsSync(path.resolve(context, `${b.dockerfile}.dockerignore`))).toBe(true);
    }
  });

  it('points both Keel instances at the postgres and redis services, in production, behind the proxy', () => {
    for (const name of KEEL_SERVICES) {
      const env = serviceEnvironment(name, DEPLOY_VARS);
      expect(env.NODE_ENV).toBe('production');
      const db = new URL(env.DATABASE_URL!);
      expect(db.protocol).toBe('postgres:');
      expect(db.hostname).toBe('postgres');
      expect(decodeURIComponent(db.password)).toBe(DEPLOY_VARS.POSTGRES_PASSWORD);
      expect(db.pathname).toBe(`/${String(rawEnvironment(compose.services.postgres!).POSTGRES_DB)}`);
      expect(db.username).toBe(rawEnvironment(compose.services.postgres!).POSTGRES_USER);
      expect(new URL(env.REDIS_URL!).hostname).toBe('redis');
      expect(env.SECRET_KEY).toBe(DEPLOY_VARS.SECRET_KEY);
      expect(env.TRUST_PROXY).toBe('true');

      const deps = compose.services[name]!.depends_on as Record<string, { condition?: string }>;
      expect(deps.postgres?.condition).toBe('service_healthy');
      expect(deps.redis?.condition).toBe('service_healthy');
    }
  });

  it('publishes ports only from Caddy (80 and 443)', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (name === 'caddy') continue;
      expect(svc.ports, `${name} must not publish ports`).toBeUndefined();
    }
    const published = (compose.services.caddy!.ports ?? []).map(String);
    expect(published).toContain('80:80');
    expect(published).toContain('443:443');
  });

  it('passes Keel only variables Keel knows', () => {
    for (const name of KEEL_SERVICES) {
      const unknown = Object.keys(rawEnvironment(compose.services[name]!)).filter((k) => !KNOWN.has(k));
      expect(unknown, `${name} sets variables Keel does not read`).toEqual([]);
    }
  });

  it('requires SECRET_KEY, CORS_ORIGINS and POSTGRES_PASSWORD, and .env.example lists every variable it uses', () => {
    const { all, required } = referencedVariables(composeText);
    for (const name of ['SECRET_KEY', 'CORS_ORIGINS', 'POSTGRES_PASSWORD']) expect(required.has(name), name).toBe(true);
    expect([...all].filter((v) => !(v in envExample))).toEqual([]);
    expect(() => serviceEnvironment('keel-1', { ...DEPLOY_VARS, SECRET_KEY: undefined })).toThrow(/SECRET_KEY/);
    expect(() => serviceEnvironment('keel-1', { ...DEPLOY_VARS, CORS_ORIGINS: '' })).toThrow(/CORS_ORIGINS/);
  });

  it('keeps Keel data on a declared volume at the image DATA_DIR, shared by both instances', () => {
    const declared = new Set(Object.keys(compose.volumes ?? {}));
    for (const [name, svc] of Object.entries(compose.services)) {
      for (const v of svc.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('.') || source.startsWith('/')) {
          expect(existsSync(path.resolve(DEPLOY, source)), `${name} mounts missing ${source}`).toBe(true);
        } else {
          expect(declared.has(source), `${name} uses undeclared volume ${source}`).toBe(true);
        }
      }
    }
    const dataVolumes = KEEL_SERVICES.map((n) => compose.services[n]!.volumes!.find((v) => v.split(':')[1] === imageEnv.DATA_DIR));
    expect(dataVolumes[0]).toBeDefined();
    expect(dataVolumes[1]).toBe(dataVolumes[0]);
  });

  it('gives Keel longer to stop than its shutdown deadline', () => {
    const deadlineS = Number(defaultOf('SHUTDOWN_TIMEOUT_MS')) / 1000;
    for (const name of KEEL_SERVICES) expect(seconds(compose.services[name]!.stop_grace_period ?? '10s')).toBeGreaterThan(deadlineS);
  });
});

describe('the environment compose gives keel-1, through Keel\'s own validation', () => {
  /** What the container sees: the image's ENV, overridden by compose's environment. */
  const containerEnv = (vars: Record<string, string | undefined>): Record<string, string> => ({ ...imageEnv, ...serviceEnvironment('keel-1', vars) });

  it('is accepted in production with real values', () => {
    const config = loadConfig(containerEnv(DEPLOY_VARS), { cwd: tmpdir(), persistDevSecret: false });
    expect(config.env).toBe('production');
    expect(config.database.kind).toBe('postgres');
    expect(new URL(config.database.url).hostname).toBe('postgres');
    expect(config.redisUrl).toBe('redis://redis:6379');
    expect(config.secretKeySource).toBe('env');
    expect(config.corsOrigins).toEqual(['https://app.example.com', 'https://admin.example.com']);
    expect(config.trustProxy).toBe(true);
    expect(config.host).toBe('0.0.0.0');
    expect(config.port).toBe(8000);
    expect(config.dataDir).toBe('/app/data');
  });

  it('is refused with the placeholder SECRET_KEY of .env.example', () => {
    let error: unknown;
    try {
      loadConfig(containerEnv(envExample), { cwd: tmpdir(), persistDevSecret: false });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const problems = (error as ConfigError).problems;
    expect(problems.some((p) => p.startsWith('SECRET_KEY'))).toBe(true);
    // The example's other values are valid: the secret is the only thing left to fill in.
    expect(problems.every((p) => p.startsWith('SECRET_KEY'))).toBe(true);
  });

  it('passes `keel doctor` in production (on SQLite instead of the compose network)', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-deploy-'));
    try {
      const { REDIS_URL: _redis, ...env } = containerEnv(DEPLOY_VARS);
      const r = await runKeel(['doctor'], { ...env, DATA_DIR: dir, DATABASE_URL: path.join(dir, 'keel.db') });
      expect(r.stdout).toContain('configuration is valid (NODE_ENV=production)');
      expect(r.code, r.stdout + r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('deploy/Dockerfile', () => {
  it('builds on node:20-bookworm-slim with native build tools, npm ci and the repository build', () => {
    expect(dockerfile.stages.length).toBeGreaterThanOrEqual(2);
    for (const s of dockerfile.stages) expect(s.from).toBe('node:20-bookworm-slim');
    const runs = only(build, 'RUN').map((r) => r.args);
    const steps = runs.flatMap((r) => r.split('&&').map((s) => s.trim()));
    for (const tool of ['python3', 'make', 'g++']) expect(runs.some((r) => r.includes('apt-get install') && r.split(/\s+/).includes(tool)), tool).toBe(true);
    expect(steps.some((s) => /^npm ci\b/.test(s))).toBe(true);
    // The same build step `npm start` runs before serving.
    expect(startBuildStep).toBe('npm run build');
    expect(steps).toContain(startBuildStep);
    expect(steps.some((s) => /^npm (prune|ci) .*--omit=dev/.test(s))).toBe(true);
  });

  it('runs exactly the command `npm start` runs after its build step', () => {
    expect(cmd).toEqual(startCommand.split(/\s+/));
    expect(cmd.slice(1)).toEqual(['server/dist/main.js', 'serve']);
  });

  it('ships what the server reads at run time: server/dist, server/package.json (version), web/dist (console), node_modules', () => {
    const copied = new Set<string>();
    for (const c of only(runtime, 'COPY')) {
      const parts = c.args.split(/\s+/).filter((p) => !p.startsWith('--'));
      const dest = parts.pop()!;
      const target = path.posix.resolve(workdir, dest);
      for (const src of parts) copied.add(path.posix.relative(workdir, parts.length > 1 || dest.endsWith('/') ? path.posix.join(target, path.posix.basename(src)) : target));
    }
    const entryDir = path.posix.dirname(cmd[1]!);
    const needed = [
      entryDir,
      path.posix.join(entryDir, '..', 'package.json'),
      path.relative(REPO_ROOT, DEFAULT_WEB_DIR).split(path.sep).join('/'),
      'node_modules',
    ];
    expect(needed).toEqual(['server/dist', 'server/package.json', 'web/dist', 'node_modules']);
    for (const n of needed) expect(copied.has(n), n).toBe(true);
  });

  it('runs as a non-root user in /app with the production environment, a data volume and port 8000', () => {
    expect(workdir).toBe('/app');
    expect(imageEnv).toEqual({ NODE_ENV: 'production', HOST: '0.0.0.0', PORT: '8000', DATA_DIR: '/app/data' });
    for (const k of Object.keys(imageEnv)) expect(KNOWN.has(k), k).toBe(true);
    const user = only(runtime, 'USER').at(-1)?.args;
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user);
    expect(only(runtime, 'VOLUME').map((v) => v.args)).toContain(imageEnv.DATA_DIR);
    expect(only(runtime, 'EXPOSE').map((v) => v.args)).toContain(imageEnv.PORT);
  });

  it('has a HEALTHCHECK that uses node (no curl in the slim image) against /health', () => {
    const hc = only(runtime, 'HEALTHCHECK').at(-1)!.args;
    const probe = execForm(hc.slice(hc.indexOf('CMD') + 3).trim());
    expect(probe[0]).toBe('node');
    expect(probe.join(' ')).toContain('/health');
    expect(probe.join(' ')).toContain('127.0.0.1');
  });

  it('keeps dependencies, build output, data, secrets and .git out of the build context', () => {
    const ignored = read('deploy', 'Dockerfile.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const p of ['**/node_modules', '**/dist', 'data', '.git', '.env']) expect(ignored).toContain(p);
  });
});

describe('the image\'s environment and probes against a real production-mode server', () => {
  let server: RunningServer;
  let port: string;
  let dir: string;
  const probe = (): string[] => {
    const hc = only(runtime, 'HEALTHCHECK').at(-1)!.args;
    return execForm(hc.slice(hc.indexOf('CMD') + 3).trim());
  };
  /** Runs the HEALTHCHECK as Docker would (asynchronously: the server lives in this process). */
  const runProbe = (): Promise<number | null> => {
    const [bin, ...args] = probe();
    expect(bin).toBe('node');
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, args, { env: { PATH: process.env.PATH ?? '', PORT: port }, stdio: 'ignore', timeout: 10_000 });
      child.on('error', reject);
      child.on('exit', (code) => resolve(code));
    });
  };

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'keel-deploy-'));
    const { REDIS_URL: _redis, ...env } = { ...imageEnv, ...serviceEnvironment('keel-1', DEPLOY_VARS) };
    const config = loadConfig({ ...env, HOST: '127.0.0.1', PORT: '0', DATA_DIR: dir, DATABASE_URL: path.join(dir, 'keel.db') }, { cwd: dir, persistDevSecret: false });
    expect(config.env).toBe('production');
    const sink = new Writable({ write: (_chunk, _enc, cb) => cb() });
    server = await serve(config, { logStream: sink });
    port = new URL(server.url).port;
  });
  afterAll(async () => {
    await server?.stop('test');
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers the proxies\' probes: /health, /ready (Caddy health_uri) and /metrics (which the proxies block)', async () => {
    for (const p of ['/health', '/ready', '/metrics', '/metrics/']) {
      const res = await fetch(`${server.url}${p}`);
      expect(res.status, p).toBe(200);
      await res.arrayBuffer();
    }
  });

  it('sets HSTS itself in production, so the proxies do not add it', async () => {
    const res = await fetch(`${server.url}/health`, { headers: { 'x-request-id': 'proxy-1234' } });
    expect(res.headers.get('strict-transport-security')).toMatch(/max-age=\d+/);
    expect(res.headers.get('x-request-id')).toBe('proxy-1234');
    await res.arrayBuffer();
  });

  it('the Dockerfile HEALTHCHECK command passes against it, and fails once it is gone', async () => {
    expect(await runProbe()).toBe(0);
    await server.stop('test');
    expect(await runProbe()).not.toBe(0);
  });
});

describe('deploy/keel.service', () => {
  it('runs the same `server/dist/main.js serve` as the image, from the working directory', () => {
    const [bin, script, ...args] = one('ExecStart').split(/\s+/);
    expect(path.posix.basename(bin!)).toBe('node');
    expect(path.posix.isAbsolute(bin!)).toBe(true);
    expect([path.posix.relative(one('WorkingDirectory'), script!), ...args]).toEqual(cmd.slice(1));
    expect(one('WorkingDirectory')).toBe('/opt/keel');
  });

  it('runs as keel with its environment file, restarts on failure, and stops gracefully', () => {
    expect(one('User')).toBe('keel');
    expect(one('EnvironmentFile')).toBe('/etc/keel/keel.env');
    expect(one('Restart')).toBe('on-failure');
    expect(one('KillSignal')).toBe('SIGTERM');
    expect(seconds(one('TimeoutStopSec'))).toBeGreaterThan(Number(defaultOf('SHUTDOWN_TIMEOUT_MS')) / 1000);
  });

  it('is hardened, with only the data directory writable (and no MemoryDenyWriteExecute, which breaks V8)', () => {
    expect(one('NoNewPrivileges')).toBe('true');
    expect(one('ProtectSystem')).toBe('strict');
    expect(one('PrivateTmp')).toBe('true');
    expect(one('ReadWritePaths').split(/\s+/)).toContain('/var/lib/keel');
    expect(service.MemoryDenyWriteExecute ?? []).not.toContain('true');
  });

  it('its example keel.env is accepted in production (with a real secret), with DATA_DIR the writable path', () => {
    expect(Object.keys(unitEnvExample).length).toBeGreaterThan(0);
    for (const k of Object.keys(unitEnvExample)) expect(KNOWN.has(k), k).toBe(true);
    const config = loadConfig({ ...unitEnvExample, SECRET_KEY: DEPLOY_VARS.SECRET_KEY }, { cwd: tmpdir(), persistDevSecret: false });
    expect(config.env).toBe('production');
    expect(config.dataDir).toBe('/var/lib/keel');
    expect(one('ReadWritePaths').split(/\s+/)).toContain(config.dataDir);
    expect(config.database.url.startsWith(`${config.dataDir}/`)).toBe(true);
    expect(config.host).toBe('127.0.0.1');
    // nginx.conf proxies to the address this environment listens on.
    const upstream = directives(nginx, 'upstream').find((u) => u.args[0] === 'keel')!;
    expect(directives(upstream.block ?? [], 'server')[0]?.args[0]).toBe(`${config.host}:${config.port}`);
  });

  it('does not restart in a loop on a refused configuration: Keel exits 78, which the unit excludes', async () => {
    expect(service.RestartPreventExitStatus?.join(' ').split(/\s+/)).toContain('78');
    const r = await runKeel(['serve'], { ...imageEnv, ...serviceEnvironment('keel-1', envExample), DATA_DIR: tmpdir() });
    expect(r.stderr).toContain('SECRET_KEY');
    expect(r.code).toBe(78);
  });

  it.runIf(onPath('systemd-analyze') && existsSync(one('ExecStart').split(/\s+/)[0]!))('passes systemd-analyze verify', () => {
    const r = spawnSync('systemd-analyze', ['verify', path.join(DEPLOY, 'keel.service')], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
  });
});

describe('deploy/Caddyfile', () => {
  it('serves {$KEEL_DOMAIN:localhost}, which compose passes to Caddy', () => {
    expect(caddyDirectives).toContain('{$KEEL_DOMAIN:localhost} {');
    expect(rawEnvironment(compose.services.caddy!).KEEL_DOMAIN).toBeDefined();
    const mount = compose.services.caddy!.volumes!.find((v) => v.split(':')[1] === '/etc/caddy/Caddyfile');
    expect(path.resolve(DEPLOY, mount!.split(':')[0]!)).toBe(path.join(DEPLOY, 'Caddyfile'));
  });

  it('balances over exactly the compose Keel services on the image port, checking /ready', () => {
    const rp = caddyDirectives.find((l) => l.startsWith('reverse_proxy '))!;
    const upstreams = rp.replace(/\{$/, '').trim().split(/\s+/).slice(1);
    expect(upstreams.sort()).toEqual(KEEL_SERVICES.map((s) => `${s}:${imageEnv.PORT}`).sort());
    expect(caddyDirectives.some((l) => /^lb_policy \S+$/.test(l))).toBe(true);
    expect(caddyDirectives).toContain('health_uri /ready');
  });

  it('streams without buffering and without compression', () => {
    expect(caddyDirectives).toContain('flush_interval -1');
    expect(caddyDirectives.some((l) => /^encode\b/.test(l))).toBe(false);
  });

  it('answers 404 for /metrics (and /metrics/, since Keel ignores trailing slashes)', () => {
    const matcher = caddyDirectives.find((l) => /^@\S+ path /.test(l) && l.split(/\s+/).includes('/metrics'))!;
    expect(matcher).toBeDefined();
    expect(matcher.split(/\s+/)).toContain('/metrics/*');
    expect(caddyDirectives).toContain(`respond ${matcher.split(/\s+/)[0]} 404`);
  });

  it.runIf(onPath('caddy'))('adapts with the real caddy binary to the intended JSON', () => {
    const r = spawnSync('caddy', ['adapt', '--config', path.join(DEPLOY, 'Caddyfile'), '--adapter', 'caddyfile'], {
      encoding: 'utf8',
      env: { PATH: process.env.PATH ?? '', KEEL_DOMAIN: 'keel.example.com' },
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('"keel.example.com"');
    expect(r.stdout).toContain('"flush_interval":-1');
    expect(r.stdout).toContain('"uri":"/ready"');
    expect(r.stdout).toMatch(/"status_code":404[^]*"path":\["\/metrics","\/metrics\/\*"\]/);
  });
});

describe('deploy/nginx.conf', () => {
  it('proxies every location to the keel upstream with buffering off and hour-long reads (SSE)', () => {
    expect(proxied.length).toBeGreaterThanOrEqual(2);
    for (const loc of proxied) {
      const where = loc.args.join(' ');
      expect(directives(loc.block!, 'proxy_pass')[0]!.args[0], where).toBe('http://keel');
      expect(effective(loc, 'proxy_buffering')[0]?.args, where).toEqual(['off']);
      expect(seconds(effective(loc, 'proxy_read_timeout')[0]!.args[0]!), where).toBeGreaterThanOrEqual(3600);
      expect(effective(loc, 'proxy_http_version')[0]?.args, where).toEqual(['1.1']);
    }
  });

  it('upgrades WebSocket connections on /ws/ through the $connection_upgrade map', () => {
    const map = directives(nginx, 'map').find((m) => m.args.join(' ') === '$http_upgrade $connection_upgrade')!;
    expect(map).toBeDefined();
    expect(map.block!.map((d) => [d.name, ...d.args].join(' '))).toEqual(expect.arrayContaining(['default upgrade']));
    const ws = proxied.find((l) => l.args.join(' ') === '/ws/')!;
    expect(ws).toBeDefined();
    const headers = effective(ws, 'proxy_set_header').map((d) => d.args.join(' '));
    expect(headers).toContain('Upgrade $http_upgrade');
    expect(headers).toContain('Connection $connection_upgrade');
  });

  it('forwards client address, scheme and request id to every proxied location', () => {
    for (const loc of proxied) {
      // A proxy_set_header inside a location would silently drop every server-level one.
      const names = effective(loc, 'proxy_set_header').map((d) => d.args[0]!.toLowerCase());
      for (const h of ['host', 'x-forwarded-for', 'x-forwarded-proto', 'x-request-id']) expect(names, `${loc.args.join(' ')}: ${h}`).toContain(h);
    }
  });

  it('accepts uploads up to MAX_UPLOAD_SIZE_MB, denies /metrics, and leaves HSTS to Keel', () => {
    const size = directives(tlsServer.block!, 'client_max_body_size')[0]!.args[0]!;
    expect(size).toMatch(/^\d+m$/);
    expect(Number.parseInt(size, 10)).toBeGreaterThan(Number(defaultOf('MAX_UPLOAD_SIZE_MB')));
    for (const p of ['/metrics', '/metrics/']) {
      const loc = locations.find((l) => l.args.join(' ') === `= ${p}`);
      expect(loc?.block?.map((d) => [d.name, ...d.args].join(' ')), p).toEqual(['deny all']);
    }
    const all = (ds: readonly NginxDirective[]): NginxDirective[] => ds.flatMap((d) => [d, ...all(d.block ?? [])]);
    expect(all(nginx).filter((d) => d.name === 'add_header' && /strict-transport-security/i.test(d.args[0] ?? ''))).toEqual([]);
  });

  it.runIf(onPath('nginx') && onPath('openssl'))('passes `nginx -t` (with a throwaway certificate)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'keel-nginx-'));
    try {
      const cert = path.join(dir, 'cert.pem');
      const key = path.join(dir, 'key.pem');
      const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=keel.example.com'], { encoding: 'utf8' });
      expect(gen.status, gen.stderr).toBe(0);
      const conf = read('deploy', 'nginx.conf')
        .replace(/\/etc\/letsencrypt\/live\/[^/]+\/fullchain\.pem/g, cert)
        .replace(/\/etc\/letsencrypt\/live\/[^/]+\/privkey\.pem/g, key);
      writeFileSync(path.join(dir, 'keel.conf'), conf);
      writeFileSync(path.join(dir, 'nginx.conf'), [
        `pid ${dir}/nginx.pid;`,
        `error_log ${dir}/error.log;`,
        'events {}',
        `http { access_log off; client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir}; include ${dir}/keel.conf; }`,
        '',
      ].join('\n'));
      const r = spawnSync('nginx', ['-t', '-q', '-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
