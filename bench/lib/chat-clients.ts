// The chat suite's clients: a chat WebSocket (`GET /ws/chat`: auth, ping, one generation at a time)
// and a streamed `POST /conversations/:id/messages` (SSE), each timing a generation to its first
// `delta` and to its `done`, and checking the reply; plus the worker loop that keeps N generations
// running and measures those that start inside a window. See README.md ("Chat suite").
import http from 'node:http';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import WebSocket from 'ws';

export type GenerationOutcome =
  | { readonly ok: true; readonly ttfbMs: number; readonly completionMs: number; readonly deltas: number }
  | { readonly ok: false; readonly failure: string };

/** What every generation sends and what its reply must be. */
export interface GenerationPlan {
  /** The user's message. */
  readonly content: string;
  /** The assistant's reply as the fake upstream streams it: the concatenated deltas and the stored message must equal it. */
  readonly expectedText: string;
  /** A generation unfinished after this long counts as a timeout. */
  readonly timeoutMs: number;
}

/** One chat client: its conversations are made over HTTP (`POST /conversations`), its generations over its transport. */
export interface ChatClient {
  newConversation(): Promise<string>;
  generate(conversationId: string, plan: GenerationPlan): Promise<GenerationOutcome>;
  /** False once the client cannot go on (a closed socket). */
  readonly usable: boolean;
}

interface PendingGeneration {
  readonly requestId: string;
  readonly start: number;
  readonly plan: GenerationPlan;
  text: string;
  deltas: number;
  ttfb: number | undefined;
  /** The `message` frame or event came (the user's message is stored and the model was called). */
  accepted: boolean;
  readonly timer: NodeJS.Timeout;
  readonly resolve: (outcome: GenerationOutcome) => void;
}

/**
 * A `GET /ws/chat` socket, authenticated with an access token in the first frame. One generation at a
 * time (`send` → `message`, `delta`…, `done`); frames of other types are counted by type.
 */
export class ChatSocket {
  private pending: PendingGeneration | undefined;
  private readonly pongs: Array<(at: number) => void> = [];
  private seq = 0;
  /** Frames that were neither a reply to this socket's generation nor a pong, by type (e.g. `conversation.updated`). */
  readonly otherFrames: Record<string, number> = {};
  /** Set once the socket has closed, e.g. "1006" or "4401 revoked". */
  closed: string | undefined;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => this.onFrame(data, isBinary));
    ws.on('close', (code, reason) => {
      this.closed = `${code}${reason.length > 0 ? ` ${reason.toString()}` : ''}`;
      const p = this.pending;
      if (p !== undefined) this.settle(p, { ok: false, failure: `socket closed ${this.closed}` });
      for (const wake of this.pongs.splice(0)) wake(Number.NaN);
    });
    // 'error' is always followed by 'close'; without a listener it would throw.
    ws.on('error', () => undefined);
  }

  /** Opens, sends `{type: "auth", token}` and resolves on `{type: "ready"}`; rejects with the reason otherwise. */
  static open(url: string, token: string, timeoutMs: number): Promise<ChatSocket> {
    return new Promise<ChatSocket>((resolve, reject) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: timeoutMs });
      let settled = false;
      const detach = (): void => {
        clearTimeout(timer);
        ws.off('unexpected-response', onUnexpected);
        ws.off('error', onError);
        ws.off('close', onClose);
        ws.off('open', onOpen);
        ws.off('message', onMessage);
      };
      const fail = (why: string): void => {
        if (settled) return;
        settled = true;
        detach();
        // Later errors of the dying socket must not be unhandled.
        ws.on('error', () => undefined);
        ws.terminate();
        reject(new Error(why));
      };
      const timer = setTimeout(() => fail('no ready frame within the timeout'), timeoutMs);
      const onUnexpected = (_req: http.ClientRequest, res: http.IncomingMessage): void => fail(`upgrade answered HTTP ${res.statusCode ?? '?'}`);
      const onError = (err: NodeJS.ErrnoException): void => fail(`socket error ${err.code ?? err.message}`);
      const onClose = (code: number, reason: Buffer): void => fail(`closed ${code}${reason.length > 0 ? ` ${reason.toString()}` : ''} before ready`);
      const onOpen = (): void => ws.send(JSON.stringify({ type: 'auth', token }));
      const onMessage = (data: WebSocket.RawData): void => {
        let frame: { type?: unknown; code?: unknown };
        try {
          frame = JSON.parse(rawText(data)) as { type?: unknown; code?: unknown };
        } catch {
          fail('a first frame that is not JSON');
          return;
        }
        if (frame.type !== 'ready') {
          fail(`first frame ${String(frame.type)}${typeof frame.code === 'string' ? ` ${frame.code}` : ''}, not ready`);
          return;
        }
        settled = true;
        detach();
        resolve(new ChatSocket(ws));
      };
      ws.on('unexpected-response', onUnexpected);
      ws.on('error', onError);
      ws.on('close', onClose);
      ws.on('open', onOpen);
      ws.on('message', onMessage);
    });
  }

  get open(): boolean {
    return this.closed === undefined && this.ws.readyState === WebSocket.OPEN;
  }

  /** `{type: "ping"}` → `{type: "pong"}`: the round trip in ms, NaN when no pong came within `timeoutMs` or the socket closed. */
  async ping(timeoutMs: number): Promise<number> {
    if (!this.open) return Number.NaN;
    const start = performance.now();
    const answered = new Promise<number>((resolve) => this.pongs.push(resolve));
    this.ws.send('{"type":"ping"}');
    const timer = new AbortController();
    const at = await Promise.race([answered, delay(timeoutMs, Number.NaN, { signal: timer.signal }).catch(() => Number.NaN)]);
    timer.abort();
    return at - start;
  }

  generate(conversationId: string, plan: GenerationPlan): Promise<GenerationOutcome> {
    if (!this.open) return Promise.resolve({ ok: false, failure: `socket closed ${this.closed ?? ''}`.trim() });
    return new Promise<GenerationOutcome>((resolve) => {
      const requestId = `r${++this.seq}`;
      const timer = setTimeout(() => {
        const p = this.pending;
        if (p?.requestId === requestId) this.settle(p, { ok: false, failure: `timeout ${stage(p.accepted, p.deltas)}` });
      }, plan.timeoutMs);
      this.pending = { requestId, start: performance.now(), plan, text: '', deltas: 0, ttfb: undefined, accepted: false, timer, resolve };
      this.ws.send(JSON.stringify({ type: 'send', request_id: requestId, conversation_id: conversationId, content: plan.content }));
    });
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
  }

  /** Resolves when the socket has closed (after `close()`), or after `timeoutMs`. */
  async whenClosed(timeoutMs: number): Promise<void> {
    if (this.ws.readyState === WebSocket.CLOSED) return;
    await Promise.race([new Promise((resolve) => this.ws.once('close', resolve)), delay(timeoutMs)]);
  }

  private onFrame(data: WebSocket.RawData, isBinary: boolean): void {
    const now = performance.now();
    if (isBinary) {
      this.count('binary');
      return;
    }
    let frame: { type?: unknown; request_id?: unknown; text?: unknown; code?: unknown; message?: { status?: unknown; content?: unknown } };
    try {
      frame = JSON.parse(rawText(data)) as typeof frame;
    } catch {
      this.count('not JSON');
      return;
    }
    if (frame.type === 'pong') {
      this.pongs.shift()?.(now);
      return;
    }
    const p = this.pending;
    if (p === undefined || frame.request_id !== p.requestId) {
      this.count(String(frame.type));
      return;
    }
    switch (frame.type) {
      case 'message':
        p.accepted = true;
        return;
      case 'delta':
        p.deltas++;
        p.ttfb ??= now;
        if (typeof frame.text === 'string') p.text += frame.text;
        return;
      case 'done':
        this.settle(p, judge(p, frame.message?.status, frame.message?.content, now));
        return;
      case 'error':
        this.settle(p, { ok: false, failure: `error frame ${typeof frame.code === 'string' ? frame.code : '?'}` });
        return;
      default:
        this.count(String(frame.type));
    }
  }

  private settle(p: PendingGeneration, outcome: GenerationOutcome): void {
    if (this.pending !== p) return;
    this.pending = undefined;
    clearTimeout(p.timer);
    p.resolve(outcome);
  }

  private count(type: string): void {
    this.otherFrames[type] = (this.otherFrames[type] ?? 0) + 1;
  }
}

/** A generation is good when it ended `complete` with the expected text, streamed and stored alike. */
function judge(p: Pick<PendingGeneration, 'start' | 'plan' | 'text' | 'deltas' | 'ttfb'>, status: unknown, content: unknown, now: number): GenerationOutcome {
  if (status !== 'complete') return { ok: false, failure: `done with status ${String(status)}` };
  if (p.ttfb === undefined) return { ok: false, failure: 'done without a delta' };
  if (p.text !== p.plan.expectedText) return { ok: false, failure: 'streamed text differs from the upstream\'s' };
  if (content !== p.plan.expectedText) return { ok: false, failure: 'stored text differs from the upstream\'s' };
  return { ok: true, ttfbMs: p.ttfb - p.start, completionMs: now - p.start, deltas: p.deltas };
}

/** Where a generation that timed out had got to. */
function stage(accepted: boolean, deltas: number): string {
  if (!accepted) return 'before the message event';
  return deltas === 0 ? 'after the message event, before any delta' : `after ${deltas} deltas`;
}

function rawText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

/**
 * `POST /conversations/:id/messages` with `stream: true` over a keep-alive agent: events `message`,
 * `delta`…, `done` (or `error`). The clock starts just before the request is written.
 */
export class SseChatClient implements ChatClient {
  readonly usable = true;

  constructor(
    private readonly origin: URL,
    private readonly agent: http.Agent,
    private readonly token: string,
  ) {}

  /** Over the same keep-alive agent as the generations. */
  newConversation(): Promise<string> {
    return postConversation(this.origin, this.agent, this.token);
  }

  generate(conversationId: string, plan: GenerationPlan): Promise<GenerationOutcome> {
    return new Promise<GenerationOutcome>((resolve) => {
      const body = JSON.stringify({ content: plan.content, stream: true });
      let settled = false;
      const finish = (outcome: GenerationOutcome): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(outcome);
      };
      const state = { start: performance.now(), plan, text: '', deltas: 0, ttfb: undefined as number | undefined, accepted: false, headers: false };
      const req = http.request({
        agent: this.agent,
        hostname: this.origin.hostname,
        port: this.origin.port,
        path: `/conversations/${encodeURIComponent(conversationId)}/messages`,
        method: 'POST',
        headers: { authorization: `Bearer ${this.token}`, 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) },
      });
      const timer = setTimeout(() => {
        finish({ ok: false, failure: `timeout ${state.headers ? stage(state.accepted, state.deltas) : 'before the response headers'}` });
        req.destroy();
      }, plan.timeoutMs);
      req.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, failure: `socket error ${err.code ?? err.message}` }));
      req.on('response', (res) => {
        state.headers = true;
        if (res.statusCode !== 200) {
          res.resume();
          res.on('end', () => finish({ ok: false, failure: `HTTP ${res.statusCode ?? '?'}` }));
          return;
        }
        res.setEncoding('utf8');
        let buffer = '';
        let outcome: GenerationOutcome | undefined;
        res.on('data', (chunk: string) => {
          const now = performance.now();
          buffer += chunk;
          let end: number;
          while ((end = buffer.indexOf('\n\n')) !== -1) {
            const event = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let name = 'message';
            let data = '';
            for (const line of event.split('\n')) {
              if (line.startsWith('event: ')) name = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            // `: keep-alive` comments carry no data.
            if (data === '' || outcome !== undefined) continue;
            if (name === 'message') {
              state.accepted = true;
            } else if (name === 'delta') {
              state.deltas++;
              state.ttfb ??= now;
              state.text += (JSON.parse(data) as { text?: string }).text ?? '';
            } else if (name === 'done') {
              const m = (JSON.parse(data) as { assistant_message?: { status?: unknown; content?: unknown } }).assistant_message;
              outcome = judge(state, m?.status, m?.content, now);
            } else if (name === 'error') {
              outcome = { ok: false, failure: `error event ${(JSON.parse(data) as { code?: string }).code ?? '?'}` };
            }
          }
        });
        res.on('close', () => {
          if (!res.complete) finish({ ok: false, failure: 'response broken off' });
        });
        res.on('error', (err: NodeJS.ErrnoException) => finish({ ok: false, failure: `response error ${err.code ?? err.message}` }));
        res.on('end', () => finish(outcome ?? { ok: false, failure: 'ended without done' }));
      });
      req.end(body);
    });
  }

}

/** A chat WebSocket whose conversations are made over a keep-alive HTTP agent with the same token. */
export class WsChatClient implements ChatClient {
  constructor(
    readonly socket: ChatSocket,
    private readonly origin: URL,
    private readonly agent: http.Agent,
    private readonly token: string,
  ) {}

  get usable(): boolean {
    return this.socket.open;
  }

  newConversation(): Promise<string> {
    return postConversation(this.origin, this.agent, this.token);
  }

  generate(conversationId: string, plan: GenerationPlan): Promise<GenerationOutcome> {
    return this.socket.generate(conversationId, plan);
  }
}

const CONVERSATION_TIMEOUT_MS = 30_000;

/** POST /conversations `{}` over `agent` with `token`; the new conversation's id. */
export function postConversation(origin: URL, agent: http.Agent, token: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const req = http.request({
      agent,
      hostname: origin.hostname,
      port: origin.port,
      path: '/conversations',
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': '2' },
      timeout: CONVERSATION_TIMEOUT_MS,
    });
    req.on('timeout', () => req.destroy(new Error('POST /conversations timed out')));
    req.on('error', (err: NodeJS.ErrnoException) => reject(new Error(`POST /conversations: ${err.code ?? err.message}`)));
    req.on('response', (res) => {
      res.setEncoding('utf8');
      let body = '';
      res.on('data', (chunk: string) => {
        body += chunk;
      });
      res.on('error', (err: NodeJS.ErrnoException) => reject(new Error(`POST /conversations: ${err.code ?? err.message}`)));
      res.on('end', () => {
        if (res.statusCode !== 201) {
          reject(new Error(`POST /conversations answered ${res.statusCode ?? '?'}`));
          return;
        }
        const id = (JSON.parse(body) as { id?: unknown }).id;
        if (typeof id === 'string') resolve(id);
        else reject(new Error('POST /conversations answered without an id'));
      });
    });
    req.end('{}');
  });
}

const FAILURE_PAUSE_MS = 100;

/** How N chat clients are loaded, and which of their generations are measured. */
export interface ChatLoadPlan {
  readonly generation: GenerationPlan;
  /** A worker starts a new conversation before its first generation and after this many. */
  readonly turnsPerConversation: number;
  /** How long one generation lasts on the upstream's schedule: worker starts are spread over it. */
  readonly nominalMs: number;
  /** Unmeasured generations before the window opens (at least one nominal generation). */
  readonly warmupMs: number;
  /** The measured window. */
  readonly measuredMs: number;
}

export interface ChatLoadResult {
  readonly ttfbMs: number[];
  readonly completionMs: number[];
  /** Delta frames or events of the measured generations that completed. */
  readonly measuredDeltas: number;
  /** Generations started (warmup, window and the tail alike). */
  readonly started: number;
  readonly completed: number;
  /** Failed generations (and conversations that could not be made), by reason, warmup included. */
  readonly failures: Readonly<Record<string, number>>;
  /** Time each `POST /conversations` made during the load took, ms (the first ones, made before it, are not included). */
  readonly conversationMs: number[];
  /** The window's length as run, ms. */
  readonly windowMs: number;
}

/**
 * N workers, one per client, each running one generation after another. First every client makes its
 * first conversation, all at once while the server is otherwise idle: that also opens the clients'
 * HTTP connections, which the load then reuses (a busy Keel is slow to accept new ones: see the
 * README). Then worker i starts after i/N of a nominal generation, so the N replies do not all tick
 * on the same timer. The window opens after the stagger and the warmup; a generation is measured
 * when it starts inside it; workers go on (unmeasured) until every measured generation has ended, so
 * each measured one runs alongside N − 1 others to its end. `onPhase` is called once the first
 * conversations are made ('start'), when the window opens and when it closes.
 */
export async function runChatLoad(clients: readonly ChatClient[], plan: ChatLoadPlan, onPhase: (phase: 'start' | 'open' | 'close') => void): Promise<ChatLoadResult> {
  const n = clients.length;
  const conversationMs: number[] = [];
  const failures: Record<string, number> = {};
  const fail = (why: string): void => {
    failures[why] = (failures[why] ?? 0) + 1;
  };
  const firstConversations = await Promise.all(clients.map(async (client) => {
    try {
      return await client.newConversation();
    } catch (err) {
      fail(`conversation not created: ${(err as Error).message}`);
      return undefined;
    }
  }));
  onPhase('start');
  const t0 = performance.now();
  const stagger = n > 1 ? plan.nominalMs : 0;
  const windowStart = t0 + stagger + Math.max(plan.warmupMs, plan.nominalMs);
  const windowEnd = windowStart + plan.measuredMs;
  const ttfbMs: number[] = [];
  const completionMs: number[] = [];
  let measuredDeltas = 0;
  let started = 0;
  let completed = 0;
  let measuredInFlight = 0;
  const opened = delay(windowStart - t0).then(() => onPhase('open'));
  const closed = delay(windowEnd - t0).then(() => onPhase('close'));

  const worker = async (i: number): Promise<void> => {
    const client = clients[i]!;
    if (stagger > 0) await delay((i * stagger) / n);
    let conversationId = firstConversations[i];
    let turns = 0;
    for (;;) {
      if (performance.now() >= windowEnd && measuredInFlight === 0) return;
      if (conversationId === undefined || turns >= plan.turnsPerConversation) {
        try {
          const began = performance.now();
          conversationId = await client.newConversation();
          conversationMs.push(performance.now() - began);
          turns = 0;
        } catch (err) {
          fail(`conversation not created: ${(err as Error).message}`);
          await delay(100);
          continue;
        }
      }
      const now = performance.now();
      const measured = now >= windowStart && now < windowEnd;
      if (measured) measuredInFlight++;
      started++;
      turns++;
      const outcome = await client.generate(conversationId, plan.generation);
      if (measured) measuredInFlight--;
      if (outcome.ok) {
        completed++;
        if (measured) {
          ttfbMs.push(outcome.ttfbMs);
          completionMs.push(outcome.completionMs);
          measuredDeltas += outcome.deltas;
        }
      } else {
        fail(outcome.failure);
        // A socket that closed cannot go on; its worker stops (the failure is counted above).
        if (!client.usable) return;
        // A failing worker pauses a little, so that a persistent failure does not become a busy loop.
        await delay(FAILURE_PAUSE_MS);
      }
    }
  };
  await Promise.all(Array.from({ length: n }, (_, i) => worker(i)));
  await Promise.all([opened, closed]);
  return { ttfbMs, completionMs, measuredDeltas, started, completed, failures, conversationMs, windowMs: windowEnd - windowStart };
}
