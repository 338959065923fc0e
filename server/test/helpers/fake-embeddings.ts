import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake OpenAI-compatible embeddings server on a loopback port, whose vectors carry meaning: texts
 * that say the same thing in other words ("car maintenance plan", "automobile servicing schedule")
 * get close vectors, so semantic search can be tested where lexical search would miss.
 *
 * - `POST /v1/embeddings`: `{model, input: string | string[], dimensions?, encoding_format?: 'float' | 'base64'}`
 *   → `{object: 'list', data: [{object: 'embedding', index, embedding}], model, usage}`; vectors from
 *   {@link fakeSemanticEmbedding}; the requested model is echoed. Any model name is served unless `model` is set:
 *   then another name gets 404 `model_not_found`. An empty string or empty list gets 400, like OpenAI.
 * - `GET /v1/models`: `model` (or {@link FAKE_EMBEDDINGS_MODEL} when it is unset).
 * - with `apiKey`, anything without `Authorization: Bearer <apiKey>` gets 401 (the key is never echoed).
 *
 * How it embeds: lower-case, split into words, drop stop words, stem crudely ({@link stem}), map each word
 * through {@link CONCEPTS} (synonyms share a concept), then each concept adds ±1 at four hashed positions;
 * the sum is L2-normalised. Texts with no content word embed their whole text as one concept.
 */

export const FAKE_EMBEDDINGS_MODEL = 'fake-embed-384';
export const FAKE_EMBEDDING_DIMENSIONS = 384;
/** Positions (each ±1) one concept adds to a vector. */
const COMPONENTS_PER_CONCEPT = 4;

/** Synonym groups: every word of a group (after stemming) maps to the group's first word. */
const SYNONYMS: readonly string[][] = [
  ['car', 'automobile', 'auto', 'vehicle', 'motorcar', 'sedan'],
  ['maintain', 'maintenance', 'upkeep', 'servicing', 'service', 'tune-up', 'tuneup'],
  ['repair', 'fix', 'mend', 'patch', 'remedy', 'resolve'],
  ['plan', 'planning', 'schedule', 'timetable', 'agenda', 'roadmap', 'calendar'],
  ['cheap', 'inexpensive', 'affordable', 'budget', 'economical', 'low-cost'],
  ['expensive', 'costly', 'pricey', 'overpriced'],
  ['price', 'cost', 'fee', 'charge', 'pricing', 'rate'],
  ['start', 'begin', 'beginning', 'commence', 'launch', 'initiate', 'kickoff', 'onset'],
  ['stop', 'end', 'finish', 'terminate', 'halt', 'cease', 'conclude'],
  ['buy', 'purchase', 'acquire', 'shop'],
  ['sell', 'vend', 'resell'],
  ['error', 'failure', 'fail', 'fault', 'bug', 'defect', 'malfunction', 'glitch', 'crash', 'exception'],
  ['big', 'large', 'huge', 'enormous', 'giant', 'massive'],
  ['small', 'little', 'tiny', 'miniature', 'compact'],
  ['fast', 'quick', 'rapid', 'speedy', 'swift'],
  ['slow', 'sluggish', 'laggy'],
  ['help', 'assist', 'assistance', 'support', 'aid'],
  ['house', 'home', 'residence', 'dwelling', 'apartment'],
  ['doctor', 'physician', 'medic', 'clinician'],
  ['ill', 'sick', 'unwell', 'illness', 'sickness', 'disease'],
  ['money', 'cash', 'funds', 'currency'],
  ['delete', 'remove', 'erase', 'purge', 'wipe'],
  ['create', 'make', 'build', 'generate', 'produce'],
  ['install', 'setup', 'deploy', 'provision'],
  ['document', 'file', 'paper', 'doc', 'record'],
  ['search', 'find', 'lookup', 'locate', 'retrieve'],
  ['answer', 'reply', 'response', 'respond'],
  ['password', 'passphrase', 'passcode'],
  ['login', 'signin', 'logon', 'authenticate', 'authentication'],
  ['happy', 'glad', 'joyful', 'cheerful', 'pleased'],
  ['sad', 'unhappy', 'sorrowful', 'gloomy'],
  ['dog', 'puppy', 'hound', 'canine'],
  ['cat', 'kitten', 'feline', 'kitty'],
  ['child', 'kid', 'youngster', 'toddler'],
  ['show', 'display', 'present', 'render'],
  ['speak', 'talk', 'say', 'tell'],
  ['road', 'street', 'highway', 'avenue'],
  ['travel', 'trip', 'journey', 'voyage', 'tour'],
  ['food', 'meal', 'dish', 'cuisine'],
  ['eat', 'dine', 'consume'],
  ['engine', 'motor'],
  ['oil', 'lubricant'],
  ['tire', 'tyre', 'wheel'],
  ['invoice', 'bill', 'receipt'],
  ['refund', 'reimbursement', 'repayment'],
  ['employee', 'staff', 'worker', 'personnel'],
  ['holiday', 'vacation', 'leave'],
  ['rule', 'policy', 'guideline', 'regulation'],
];

const STOP_WORDS = new Set([
  'a', 'an', 'the', 'and', 'or', 'but', 'of', 'for', 'to', 'in', 'on', 'at', 'by', 'with', 'from', 'into', 'about', 'as',
  'is', 'are', 'was', 'were', 'be', 'been', 'being', 'am', 'do', 'does', 'did', 'have', 'has', 'had',
  'i', 'me', 'my', 'we', 'our', 'you', 'your', 'he', 'she', 'it', 'its', 'they', 'them', 'their', 'this', 'that', 'these', 'those',
  'what', 'which', 'who', 'whom', 'how', 'when', 'where', 'why', 'can', 'could', 'should', 'would', 'will', 'shall', 'may', 'might', 'must',
  'there', 'here', 'so', 'if', 'then', 'than', 'not', 'no', 'any', 'some', 'all', 'each', 'every', 'please', 'just', 'also', 'very',
]);

/** A crude suffix stripper, applied to the synonym table and to input alike (so both sides agree). */
export function stem(word: string): string {
  let w = word;
  if (w.length > 4 && w.endsWith('ies')) w = `${w.slice(0, -3)}y`;
  else if (w.length > 4 && /(x|z|ch|sh|ss)es$/.test(w)) w = w.slice(0, -2);
  else if (w.length > 3 && w.endsWith('s') && !/(ss|us|is)$/.test(w)) w = w.slice(0, -1);
  if (w.length > 5 && w.endsWith('ing')) w = w.slice(0, -3);
  else if (w.length > 4 && w.endsWith('ed')) w = w.slice(0, -2);
  if (w.length > 4 && w.endsWith('e')) w = w.slice(0, -1);
  return w;
}

/** Stemmed word → concept. */
export const CONCEPTS: ReadonlyMap<string, string> = new Map(SYNONYMS.flatMap((group) => group.map((w) => [stem(w), group[0]!] as [string, string])));

/** The concepts of a text, in order, repeats kept: what its fake embedding is the sum of. */
export function fakeConcepts(text: string): string[] {
  const words = text.toLowerCase().match(/[\p{L}\p{N}]+(?:-[\p{L}\p{N}]+)*/gu) ?? [];
  const concepts: string[] = [];
  for (const word of words) {
    if (STOP_WORDS.has(word)) continue;
    const direct = CONCEPTS.get(stem(word));
    if (direct) {
      concepts.push(direct);
      continue;
    }
    // A hyphenated word not in the table counts as its parts ("follow-up" → follow, up).
    for (const part of word.includes('-') ? word.split('-') : [word]) {
      if (!STOP_WORDS.has(part)) concepts.push(CONCEPTS.get(stem(part)) ?? stem(part));
    }
  }
  return concepts;
}

/** The fake's embedding of `text`: unit length, deterministic, `dimensions` long (see the module comment). */
export function fakeSemanticEmbedding(text: string, dimensions: number = FAKE_EMBEDDING_DIMENSIONS): number[] {
  const v = new Array<number>(dimensions).fill(0);
  const concepts = fakeConcepts(text);
  for (const concept of concepts.length > 0 ? concepts : [`text:${text}`]) {
    const digest = createHash('sha256').update(concept).digest();
    for (let k = 0; k < COMPONENTS_PER_CONCEPT; k++) {
      const index = digest.readUInt32BE(k * 6) % dimensions;
      v[index]! += (digest[k * 6 + 4]! & 1) === 1 ? 1 : -1;
    }
  }
  let norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  // Opposite signs can cancel out (a tiny dimensions count): fall back to a fixed unit vector.
  if (norm === 0) {
    v[0] = 1;
    norm = 1;
  }
  return v.map((x) => x / norm);
}

/** Cosine similarity of two equally long vectors (plain arrays or Float32Arrays). */
export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i]!;
    const y = b[i]!;
    dot += x * y;
    na += x * x;
    nb += y * y;
  }
  return na === 0 || nb === 0 ? 0 : dot / Math.sqrt(na * nb);
}

export interface FakeEmbeddingsOptions {
  /** When set, requests without `Authorization: Bearer <apiKey>` get 401. */
  apiKey?: string;
  /** Serve only this model (others get 404); switchable later via `fake.model`. Default: any model name is served. */
  model?: string;
  /** Vector length when a request has no `dimensions`. Default {@link FAKE_EMBEDDING_DIMENSIONS}. */
  dimensions?: number;
}

export interface FakeEmbeddingsRequest {
  method: string;
  /** Path without the query string, `/v1` included. */
  path: string;
  /** As Node parsed them (lower-case names), `authorization` included. */
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body; the raw text when not JSON; null when empty. */
  body: unknown;
  receivedAt: number;
  /** How it was answered: the HTTP status, or `'stalled'` while the fake holds it. */
  answer?: number | 'stalled';
  /** Set when the client went away before the answer was complete. */
  abortedAt?: number;
}

export interface FakeEmbeddings {
  /** Base URL including `/v1` (what EMBEDDINGS_BASE_URL takes). */
  readonly url: string;
  /** The only model served, or undefined for any; set it to switch (other names then get 404). */
  model: string | undefined;
  /** Default vector length; settable. */
  dimensions: number;
  /** Every request, in arrival order. */
  readonly requests: FakeEmbeddingsRequest[];
  /** `requests`: POSTs to /v1/embeddings received (failed ones too); `inputs`: texts embedded in successful answers. */
  readonly counts: { readonly requests: number; readonly inputs: number };
  /** Wait this long before answering each embeddings request (errors too). Settable; default 0. */
  delayMs: number;
  /** Answer the next `count` embeddings requests with `status` (default 500) in OpenAI's error shape; `retryAfter` adds `Retry-After`. */
  failNext(count: number, status?: number, options?: { retryAfter?: number }): void;
  /**
   * `stall()` / `stall(true)` / `stall({after})`: after answering `after` more embeddings requests (default 0),
   * hold every later one open without a byte until the client goes away or `close()`, so a process can be
   * killed mid-embedding. `stall(false)` is `resume()`.
   */
  stall(on?: boolean | { after?: number }): void;
  /** Stop stalling new requests (held ones stay held until their client leaves). */
  resume(): void;
  /** Resolves once `count` embeddings requests have arrived; rejects after `timeoutMs` (default 5000). */
  waitForRequests(count: number, timeoutMs?: number): Promise<void>;
  /** Forget requests, counts, failures, delay and stalling (model and dimensions stay). */
  reset(): void;
  /** Stop listening and drop every connection, stalled ones included. */
  close(): Promise<void>;
}

function openAIError(status: number, message: string, code: string | null = null, param: string | null = null): { error: Record<string, unknown> } {
  const type = status === 429 ? 'requests' : status >= 500 ? 'server_error' : 'invalid_request_error';
  return { error: { message, type, param, code } };
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  const text = Buffer.concat(parts).toString('utf8');
  if (text === '') return null;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

function words(text: string): number {
  return text.split(/\s+/).filter((w) => w !== '').length;
}

/** Starts the fake on 127.0.0.1 and an ephemeral port. */
export async function startFakeEmbeddings(options: FakeEmbeddingsOptions = {}): Promise<FakeEmbeddings> {
  const requests: FakeEmbeddingsRequest[] = [];
  const counts = { requests: 0, inputs: 0 };
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let failures: Array<{ status: number; retryAfter?: number }> = [];
  let stallAfter: number | undefined;
  let delayMs = 0;
  let model = options.model;
  let dimensions = options.dimensions ?? FAKE_EMBEDDING_DIMENSIONS;

  function send(res: ServerResponse, rec: FakeEmbeddingsRequest, status: number, body: unknown, headers: Record<string, string> = {}): void {
    if (res.destroyed) return;
    rec.answer = status;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  }

  function pause(ms: number, res: ServerResponse): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      res.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async function embeddings(res: ServerResponse, rec: FakeEmbeddingsRequest): Promise<void> {
    if (stallAfter !== undefined) {
      if (stallAfter <= 0) {
        rec.answer = 'stalled';
        return; // held open: closed by the client, or by close()
      }
      stallAfter--;
    }
    await pause(delayMs, res);
    if (res.destroyed) return;
    const failure = failures.shift();
    if (failure) {
      return send(res, rec, failure.status, openAIError(failure.status, `Fake embeddings failure (HTTP ${failure.status}).`, failure.status === 429 ? 'rate_limit_exceeded' : null),
        failure.retryAfter !== undefined ? { 'retry-after': String(failure.retryAfter) } : {});
    }
    const body = rec.body as { model?: unknown; input?: unknown; dimensions?: unknown; encoding_format?: unknown } | null;
    if (!body || typeof body !== 'object') return send(res, rec, 400, openAIError(400, 'We could not parse the JSON body of your request.'));
    if (typeof body.model !== 'string' || body.model === '') return send(res, rec, 400, openAIError(400, 'You must provide a model parameter.', null, 'model'));
    if (model !== undefined && body.model !== model) return send(res, rec, 404, openAIError(404, `The model \`${body.model}\` does not exist.`, 'model_not_found', 'model'));
    const inputs = typeof body.input === 'string' ? [body.input] : body.input;
    if (!Array.isArray(inputs) || inputs.length === 0 || inputs.length > 2048 || !inputs.every((t): t is string => typeof t === 'string' && t !== '')) {
      return send(res, rec, 400, openAIError(400, "'input' must be a non-empty string or a list of 1 to 2048 non-empty strings.", null, 'input'));
    }
    if (body.dimensions !== undefined && !(typeof body.dimensions === 'number' && Number.isInteger(body.dimensions) && body.dimensions > 0)) {
      return send(res, rec, 400, openAIError(400, "'dimensions' must be a positive integer.", null, 'dimensions'));
    }
    const length = typeof body.dimensions === 'number' ? body.dimensions : dimensions;
    const base64 = body.encoding_format === 'base64';
    const data = inputs.map((text, index) => {
      const vector = fakeSemanticEmbedding(text, length);
      return { object: 'embedding', index, embedding: base64 ? Buffer.from(new Float32Array(vector).buffer).toString('base64') : vector };
    });
    counts.inputs += inputs.length;
    const tokens = inputs.reduce((n, t) => n + words(t), 0);
    send(res, rec, 200, { object: 'list', data, model: body.model, usage: { prompt_tokens: tokens, total_tokens: tokens } });
  }

  async function handle(req: IncomingMessage, res: ServerResponse, rec: FakeEmbeddingsRequest): Promise<void> {
    rec.body = await readBody(req);
    const isEmbeddings = rec.method === 'POST' && rec.path === '/v1/embeddings';
    if (isEmbeddings) {
      counts.requests++;
      events.emit('request');
    }
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return send(res, rec, 401, openAIError(401, 'Incorrect API key provided.', 'invalid_api_key'));
    }
    if (isEmbeddings) return embeddings(res, rec);
    if (rec.method === 'GET' && rec.path === '/v1/models') {
      return send(res, rec, 200, { object: 'list', data: [{ id: model ?? FAKE_EMBEDDINGS_MODEL, object: 'model', created: 1_700_000_000, owned_by: 'fake-embeddings' }] });
    }
    send(res, rec, 404, openAIError(404, `Invalid URL (${rec.method} ${rec.path})`));
  }

  const server = createServer((req, res) => {
    const rec: FakeEmbeddingsRequest = {
      method: req.method ?? 'GET',
      path: new URL(req.url ?? '/', 'http://fake.invalid').pathname,
      headers: { ...req.headers },
      body: null,
      receivedAt: Date.now(),
    };
    requests.push(rec);
    res.on('close', () => {
      if (!res.writableFinished) rec.abortedAt ??= Date.now();
    });
    handle(req, res, rec).catch((err: unknown) => {
      if (!res.headersSent) send(res, rec, 500, openAIError(500, `Fake embeddings failure: ${err instanceof Error ? err.message : String(err)}`));
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}/v1`,
    get model() {
      return model;
    },
    set model(value: string | undefined) {
      model = value;
    },
    get dimensions() {
      return dimensions;
    },
    set dimensions(value: number) {
      dimensions = value;
    },
    requests,
    counts,
    get delayMs() {
      return delayMs;
    },
    set delayMs(value: number) {
      delayMs = value;
    },
    failNext(count, status = 500, opts = {}) {
      for (let i = 0; i < count; i++) failures.push({ status, ...(opts.retryAfter !== undefined ? { retryAfter: opts.retryAfter } : {}) });
    },
    stall(on = true) {
      if (on === false) stallAfter = undefined;
      else stallAfter = on === true ? 0 : on.after ?? 0;
    },
    resume() {
      stallAfter = undefined;
    },
    waitForRequests(count, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): void => {
          if (counts.requests < count) return;
          cleanup();
          resolve();
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`fake embeddings: ${count} requests did not arrive within ${timeoutMs} ms (${counts.requests} did)`));
        }, timeoutMs);
        const cleanup = (): void => {
          clearTimeout(timer);
          events.off('request', check);
        };
        events.on('request', check);
        check();
      });
    },
    reset() {
      requests.length = 0;
      counts.requests = 0;
      counts.inputs = 0;
      failures = [];
      stallAfter = undefined;
      delayMs = 0;
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
