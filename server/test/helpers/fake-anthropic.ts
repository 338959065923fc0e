import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A fake Anthropic Messages API on a loopback port, speaking the real wire protocol: `POST /v1/messages`
 * answers a Message JSON or (with `stream: true`) the SSE sequence message_start, ping,
 * content_block_start/delta/stop…, message_delta, message_stop; `GET /v1/models` lists one model.
 * It records every request and can misbehave: error statuses with Anthropic's error body (which
 * carries FAKE_ANTHROPIC_SECRET, so tests can prove Keel never repeats it), failing the first N
 * requests, slow headers, slow events, a stall or a torn socket after N events, an `event: error`.
 */

/** Appears in every error body the fake sends; must never reach a Keel error message. */
export const FAKE_ANTHROPIC_SECRET = 'fake-anthropic-secret-7Hq2Zr9Lw4';

export interface FakeAnthropicBehaviour {
  /** The reply text (default 'Hello from the fake Anthropic.'); '' for none. */
  text?: string;
  /** How the text is cut into text_delta events (default: word by word). */
  chunks?: string[];
  /** tool_use blocks after the text; the stop reason becomes tool_use. */
  toolUse?: Array<{ id?: string; name: string; input: Record<string, unknown> }>;
  /** Default end_turn, or tool_use when toolUse is set. */
  stopReason?: string;
  usage?: { input_tokens: number; output_tokens: number; cache_creation_input_tokens?: number; cache_read_input_tokens?: number };
  /** Answer this HTTP error status with Anthropic's error body: always, or only `failTimes` times. */
  status?: number;
  /** The first N requests under this behaviour fail with `status` (default 500), later ones succeed. */
  failTimes?: number;
  /** A Retry-After header on error answers. */
  retryAfter?: string;
  /** Wait this long before sending the response headers. */
  headerDelayMs?: number;
  /** Wait this long before each SSE event. */
  chunkDelayMs?: number;
  /** Stream: send N events, then go silent with the connection left open. */
  stallAfterEvents?: number;
  /** Stream: send N events, then destroy the socket. */
  breakAfterEvents?: number;
  /** Stream: send N events, then `event: error` (overloaded_error by default) and end. */
  errorAfterEvents?: number;
  errorType?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  /** The parsed JSON body (undefined for GET). */
  body: Record<string, unknown> | undefined;
  /** How the exchange ended, once it has. */
  end?: RequestEnd;
}

/** completed: the fake finished its answer; aborted: the client went away first; broken: the fake tore the socket. */
export type RequestEnd = 'completed' | 'aborted' | 'broken';

export interface FakeAnthropic {
  /** Base URL without /v1. */
  url: string;
  requests: RecordedRequest[];
  /** Sets the behaviour of every later request (and resets its failTimes count). */
  behave(behaviour: FakeAnthropicBehaviour): void;
  /** Queues a behaviour for the next request only (before the `behave` one). */
  behaveOnce(behaviour: FakeAnthropicBehaviour): void;
  /** Resolves when request `index` (0-based, in arrival order) has ended, however. */
  waitForEnd(index: number, timeoutMs?: number): Promise<RequestEnd>;
  close(): Promise<void>;
}

export const FAKE_MODEL = 'claude-fake-1';
const DEFAULT_TEXT = 'Hello from the fake Anthropic.';
const DEFAULT_USAGE = { input_tokens: 25, output_tokens: 7 };

const ERROR_TYPES: Record<number, string> = {
  400: 'invalid_request_error',
  401: 'authentication_error',
  403: 'permission_error',
  404: 'not_found_error',
  413: 'request_too_large',
  429: 'rate_limit_error',
  500: 'api_error',
  529: 'overloaded_error',
};

function errorBody(status: number, message: string): string {
  return JSON.stringify({ type: 'error', error: { type: ERROR_TYPES[status] ?? 'api_error', message: `${message} (${FAKE_ANTHROPIC_SECRET})` } });
}

function sse(event: string, data: Record<string, unknown>): string {
  return `event: ${event}\ndata: ${JSON.stringify({ type: event, ...data })}\n\n`;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function startFakeAnthropic(opts: { apiKey?: string } = {}): Promise<FakeAnthropic> {
  const requests: RecordedRequest[] = [];
  const once: FakeAnthropicBehaviour[] = [];
  let current: FakeAnthropicBehaviour = {};
  let failed = 0;
  let messageCount = 0;
  const enders = new Map<number, Array<(end: RequestEnd) => void>>();

  const finish = (index: number, end: RequestEnd): void => {
    const record = requests[index];
    if (!record || record.end) return;
    record.end = end;
    for (const resolve of enders.get(index) ?? []) resolve(end);
    enders.delete(index);
  };

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: Record<string, unknown> | undefined;
      try {
        body = raw ? (JSON.parse(raw) as Record<string, unknown>) : undefined;
      } catch {
        body = undefined;
      }
      const index = requests.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body }) - 1;
      let broken = false;
      res.on('close', () => finish(index, broken ? 'broken' : res.writableFinished ? 'completed' : 'aborted'));
      void answer(req, res, body, () => (broken = true));
    });
  });

  async function answer(req: http.IncomingMessage, res: http.ServerResponse, body: Record<string, unknown> | undefined, markBroken: () => void): Promise<void> {
    const sendError = (status: number, message: string, retryAfter?: string): void => {
      const headers: Record<string, string> = { 'content-type': 'application/json', 'request-id': 'req_fake' };
      if (retryAfter !== undefined) headers['retry-after'] = retryAfter;
      res.writeHead(status, headers).end(errorBody(status, message));
    };
    const path = (req.url ?? '').split('?')[0];
    if (opts.apiKey !== undefined && req.headers['x-api-key'] !== opts.apiKey) return sendError(401, 'invalid x-api-key');
    if (!req.headers['anthropic-version']) return sendError(400, 'anthropic-version: header is required');

    if (req.method === 'GET' && path === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(
        JSON.stringify({ data: [{ type: 'model', id: FAKE_MODEL, display_name: 'Claude Fake 1', created_at: '2025-01-01T00:00:00Z' }], has_more: false, first_id: FAKE_MODEL, last_id: FAKE_MODEL }),
      );
      return;
    }
    if (req.method !== 'POST' || path !== '/v1/messages') return sendError(404, 'Not found');
    if (!body || typeof body.model !== 'string' || typeof body.max_tokens !== 'number' || !Array.isArray(body.messages)) {
      return sendError(400, 'model, max_tokens and messages are required');
    }

    const b = once.shift() ?? current;
    if (b.headerDelayMs) await sleep(b.headerDelayMs);
    if (res.destroyed) return;
    if (b.status !== undefined && (b.failTimes === undefined || failed < b.failTimes)) {
      if (b.failTimes !== undefined) failed++;
      return sendError(b.status, 'Simulated failure', b.retryAfter);
    }
    if (b.failTimes !== undefined && failed < b.failTimes) {
      failed++;
      return sendError(500, 'Simulated failure', b.retryAfter);
    }

    const id = `msg_fake_${++messageCount}`;
    const text = b.text ?? DEFAULT_TEXT;
    const tools = (b.toolUse ?? []).map((t, i) => ({ id: t.id ?? `toolu_fake_${messageCount}_${i}`, name: t.name, input: t.input }));
    const stopReason = b.stopReason ?? (tools.length > 0 ? 'tool_use' : 'end_turn');
    const usage = b.usage ?? DEFAULT_USAGE;

    if (body.stream !== true) {
      const content: Array<Record<string, unknown>> = [];
      if (text !== '') content.push({ type: 'text', text });
      for (const t of tools) content.push({ type: 'tool_use', ...t });
      res.writeHead(200, { 'content-type': 'application/json', 'request-id': 'req_fake' }).end(
        JSON.stringify({ id, type: 'message', role: 'assistant', model: body.model, content, stop_reason: stopReason, stop_sequence: null, usage }),
      );
      return;
    }

    const { output_tokens: outputTokens, ...inputUsage } = usage;
    const events: string[] = [
      sse('message_start', { message: { id, type: 'message', role: 'assistant', model: body.model, content: [], stop_reason: null, stop_sequence: null, usage: { ...inputUsage, output_tokens: 1 } } }),
      sse('ping', {}),
    ];
    let block = 0;
    if (text !== '') {
      events.push(sse('content_block_start', { index: block, content_block: { type: 'text', text: '' } }));
      const pieces = b.chunks ?? text.match(/\S+\s*|\s+/g) ?? [text];
      pieces.forEach((piece, i) => {
        events.push(sse('content_block_delta', { index: block, delta: { type: 'text_delta', text: piece } }));
        if (i % 3 === 2) events.push(sse('ping', {}));
      });
      events.push(sse('content_block_stop', { index: block }));
      block++;
    }
    for (const t of tools) {
      events.push(sse('content_block_start', { index: block, content_block: { type: 'tool_use', id: t.id, name: t.name, input: {} } }));
      events.push(sse('content_block_delta', { index: block, delta: { type: 'input_json_delta', partial_json: '' } }));
      const json = JSON.stringify(t.input);
      const third = Math.ceil(json.length / 3);
      for (let i = 0; i < json.length; i += third) {
        events.push(sse('content_block_delta', { index: block, delta: { type: 'input_json_delta', partial_json: json.slice(i, i + third) } }));
      }
      events.push(sse('content_block_stop', { index: block }));
      block++;
    }
    events.push(sse('message_delta', { delta: { stop_reason: stopReason, stop_sequence: null }, usage: { output_tokens: outputTokens } }));
    events.push(sse('message_stop', {}));

    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'request-id': 'req_fake' });
    res.flushHeaders();
    for (let i = 0; i < events.length; i++) {
      if (res.destroyed) return;
      if (i === b.stallAfterEvents) return; // silent; the connection stays open until the client leaves
      if (i === b.breakAfterEvents) {
        markBroken();
        res.socket?.destroy();
        return;
      }
      if (i === b.errorAfterEvents) {
        res.end(sse('error', { error: { type: b.errorType ?? 'overloaded_error', message: `Overloaded (${FAKE_ANTHROPIC_SECRET})` } }));
        return;
      }
      if (b.chunkDelayMs) await sleep(b.chunkDelayMs);
      if (res.destroyed) return;
      // Wait until the event is handed to the socket, so a stall or break after it really follows it.
      await new Promise<void>((resolve) => res.write(events[i], () => resolve()));
    }
    res.end();
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    behave(behaviour) {
      current = behaviour;
      failed = 0;
    },
    behaveOnce(behaviour) {
      once.push(behaviour);
    },
    waitForEnd(index, timeoutMs = 5000) {
      const ended = requests[index]?.end;
      if (ended) return Promise.resolve(ended);
      return new Promise<RequestEnd>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`fake Anthropic: request ${index} did not end within ${timeoutMs} ms`)), timeoutMs);
        const list = enders.get(index) ?? [];
        list.push((end) => {
          clearTimeout(timer);
          resolve(end);
        });
        enders.set(index, list);
      });
    },
    close() {
      server.closeAllConnections();
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
