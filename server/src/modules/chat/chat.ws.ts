import websocket from '@fastify/websocket';
import type { FastifyBaseLogger, FastifyInstance, FastifyRequest } from 'fastify';
import { Gauge } from 'prom-client';
import type { RawData, WebSocket } from 'ws';
import type { Principal } from '../../platform/auth.js';
import { AppError } from '../../platform/errors.js';
import type { ModuleContext } from '../../platform/module.js';
import type { PubSub, Unsubscribe } from '../../platform/pubsub.js';
import { userChannel, type ChatService, type MessageView } from './chat.service.js';
import type { Generation } from './generation.js';

/**
 * `GET /ws/chat`: chat over one WebSocket, several replies at once, each tracked by the client's
 * `request_id`. Frames are JSON text, one object each.
 *
 * Client → server
 * - `{type: "auth", token}` — must be the first frame (an access token or an API key with the `chat`
 *   scope; never in the URL). Anything else first, a bad token, or no auth within 10 s closes 4401
 *   `unauthorized`. Sent again later it renews the token the socket re-checks (same user only).
 * - `{type: "send", request_id, content, conversation_id?, resumable?}` — without `conversation_id` a
 *   conversation is created. `resumable: true` keeps the generation running when this socket goes away.
 * - `{type: "attach", request_id, conversation_id, message_id, offset?}` — follow an assistant reply
 *   (running or ended) from `offset` characters: its text so far as one delta, then live deltas, then done.
 * - `{type: "cancel", request_id}` — stops the generation of that request; it ends with `done` whose
 *   `message.status` is `aborted` (the partial text is kept).
 * - `{type: "ping"}` → `{type: "pong"}` (browsers cannot send protocol pings).
 *
 * Server → client
 * - `{type: "ready", user_id}` after a good `auth`.
 * - `{type: "message", request_id, conversation_id, user_message, assistant_message}` once a send is
 *   accepted (the assistant message has status `generating`; its id is what `attach` takes).
 * - `{type: "delta", request_id, text, offset}` · `{type: "citations", request_id, citations}`.
 * - `{type: "done", request_id, conversation_id, message, usage}` — `message` is the stored assistant
 *   message (status `complete` or `aborted`), `usage` its token counts.
 * - `{type: "error", request_id?, code, message, assistant_message?}` — a bad frame or a refused or
 *   failed request; the socket stays open. A generation that failed midway carries its stored message.
 * - `{type: "conversation.updated", conversation_id}` on every socket of the user, on every instance.
 *
 * Close codes: 4401 `unauthorized` / `revoked` / `token expired` (the credential is re-checked every
 * heartbeat), 4403 `forbidden` (no `chat` scope), 1001 `server shutting down`, 1013 when the
 * credential could not be checked (try again). A bad `Origin` is refused before the upgrade (403).
 */
export interface ChatSocketDeps {
  /** Resolves an access token or API key (as sent in the auth frame) to its principal; AppError 401 when it is not valid (now). */
  authenticateToken: (token: string) => Promise<Principal>;
  /** Where ChatService announces `conversation.updated` on `userChannel(userId)`. */
  pubsub: PubSub;
  /** Ping interval; a socket that misses two pongs is terminated, and the credential is re-checked at each. */
  heartbeatMs: number;
  /** Largest frame handled; a larger one (up to 4×) gets an error frame, beyond that `ws` closes with 1009. */
  maxFrameBytes: number;
  /** `send` frames per user per minute (shared across instances through Redis when configured). */
  messagesPerMinute: number;
  /** How long a new socket may take to authenticate (default 10 s). */
  authTimeoutMs?: number;
}

/** The socket's send buffer above which streaming to it pauses until it has drained below. */
const HIGH_WATER_BYTES = 1024 * 1024;
const DRAIN_POLL_MS = 10;
/** Requests (sends and attaches) one socket may have running at once. */
const MAX_ACTIVE_REQUESTS = 16;
/** How often a follower of a reply that runs on another instance re-reads it, besides pub/sub wake-ups. */
const ELSEWHERE_POLL_MS = 2000;
/** How long closing sockets get to finish the close handshake at shutdown before they are cut. */
const CLOSE_GRACE_MS = 1000;
const ID_MAX = 128;

type Frame = Record<string, unknown>;
interface FrameProblem {
  code: string;
  message: string;
}

interface ActiveRequest {
  cancelled: boolean;
  /** The assistant message being followed, once known. */
  messageId?: string;
  /** Stops following a reply that runs on another instance (it cannot be cancelled from here). */
  readonly stop: AbortController;
}

interface Shared {
  readonly ctx: ModuleContext;
  readonly chat: ChatService;
  readonly deps: ChatSocketDeps;
  readonly limiter: SendLimiter;
  readonly connections: Set<ChatConnection>;
  readonly gauge: Gauge;
}

/**
 * Registers `GET /ws/chat` (and @fastify/websocket, in this scope). The lead wires it from the chat
 * module: `chatSocketRoutes(app, ctx, chat, { authenticateToken: auth.authenticateCredential, pubsub,
 * heartbeatMs, maxFrameBytes, messagesPerMinute })`.
 */
export async function chatSocketRoutes(app: FastifyInstance, ctx: ModuleContext, chat: ChatService, deps: ChatSocketDeps): Promise<void> {
  const connections = new Set<ChatConnection>();
  const shared: Shared = { ctx, chat, deps, limiter: createSendLimiter(ctx, deps.messagesPerMinute), connections, gauge: connectionGauge(ctx) };

  await app.register(websocket, {
    // Frames up to 4× the limit are read so that they can be answered with an error frame; beyond that `ws` closes (1009).
    options: { maxPayload: deps.maxFrameBytes * 4, perMessageDeflate: false },
    // An unclean disconnect is an ordinary event for a socket, not an error of the server.
    errorHandler: (error, socket, request) => {
      request.log.debug({ err: { message: error.message } }, 'chat socket error');
      socket.terminate();
    },
    preClose: async () => {
      for (const c of connections) c.shutdown();
      await waitUntil(() => connections.size === 0, CLOSE_GRACE_MS);
      for (const c of connections) c.terminate();
      app.websocketServer.close();
    },
  });

  ctx.lifecycle.signal.addEventListener('abort', () => {
    for (const c of connections) c.shutdown();
  }, { once: true });

  const allowed = new Set(ctx.config.corsOrigins);
  const publicOrigin = originOf(ctx.config.publicUrl);
  const originAllowed = (request: FastifyRequest): boolean => {
    const origin = request.headers.origin;
    // Browsers always send Origin on a WebSocket handshake; other clients may not, and are not at risk of cross-site use.
    if (origin === undefined) return true;
    if (allowed.has('*') || allowed.has(origin) || origin === publicOrigin) return true;
    // The same origin as the server (e.g. the web console it serves).
    const parsed = originOf(origin);
    return parsed !== undefined && request.headers.host !== undefined && new URL(parsed).host === request.headers.host;
  };

  app.get('/ws/chat', {
    websocket: true,
    onRequest: async (request) => {
      if (!originAllowed(request)) throw AppError.forbidden('This origin may not open a chat socket.');
    },
  }, (socket, request) => {
    const connection = new ChatConnection(socket, request, shared);
    if (ctx.lifecycle.signal.aborted) connection.shutdown();
  });
}

/**
 * One socket: its authentication state, its running requests by request_id, its heartbeat and its
 * subscription to the user's channel.
 */
class ChatConnection {
  private state: 'new' | 'authenticating' | 'ready' | 'closing' | 'closed' = 'new';
  private principal: Principal | undefined;
  private token: string | undefined;
  private readonly requests = new Map<string, ActiveRequest>();
  /** Aborted when the socket has closed: followers detach, which cancels non-resumable generations. */
  private readonly gone = new AbortController();
  /** Frames are handled one after another (only `auth` awaits; sends run on their own). */
  private chain: Promise<void> = Promise.resolve();
  private missedPongs = 0;
  private rechecking = false;
  private unsubscribe: Unsubscribe | undefined;
  /** Followers of replies running elsewhere, woken by `conversation.updated` for their conversation. */
  private readonly waiters = new Map<string, Set<() => void>>();
  private seq = 0;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly authTimer: NodeJS.Timeout;
  private readonly log: FastifyBaseLogger;

  constructor(
    private readonly socket: WebSocket,
    private readonly request: FastifyRequest,
    private readonly shared: Shared,
  ) {
    this.log = request.log;
    shared.connections.add(this);
    shared.gauge.inc();
    socket.on('message', (data, isBinary) => {
      this.chain = this.chain.then(() => this.onFrame(data, isBinary)).catch((err: unknown) => {
        this.log.error({ err }, 'chat socket frame failed');
      });
    });
    socket.on('pong', () => {
      this.missedPongs = 0;
    });
    socket.once('close', (code) => this.onClose(code));
    this.heartbeat = setInterval(() => this.tick(), shared.deps.heartbeatMs);
    this.heartbeat.unref();
    this.authTimer = setTimeout(() => {
      if (this.state === 'new' || this.state === 'authenticating') this.close(4401, 'unauthorized');
    }, shared.deps.authTimeoutMs ?? 10_000);
    this.authTimer.unref();
  }

  /** Server shutdown: tell the client to reconnect (to another instance). */
  shutdown(): void {
    this.close(1001, 'server shutting down');
  }

  terminate(): void {
    this.socket.terminate();
  }

  // ── frames ──────────────────────────────────────────────────────────────────────────────────

  private async onFrame(data: RawData, isBinary: boolean): Promise<void> {
    if (this.state === 'closing' || this.state === 'closed') return;
    const { frame, problem } = this.parse(data, isBinary);

    if (this.state === 'new') {
      if (!frame || frame.type !== 'auth' || typeof frame.token !== 'string' || frame.token === '') {
        this.close(4401, 'unauthorized');
        return;
      }
      await this.authenticate(frame.token);
      return;
    }
    const requestId = typeof frame?.request_id === 'string' && frame.request_id.length <= ID_MAX ? frame.request_id : undefined;
    if (!frame) {
      this.sendError(requestId, problem!);
      return;
    }
    try {
      switch (frame.type) {
        case 'auth':
          await this.reauthenticate(frame);
          return;
        case 'send':
          this.startSend(frame);
          return;
        case 'attach':
          this.startAttach(frame);
          return;
        case 'cancel':
          this.cancel(frame);
          return;
        case 'ping':
          this.send({ type: 'pong' });
          return;
        default:
          throw invalid(typeof frame.type === 'string' ? `Unknown frame type "${frame.type.slice(0, 40)}".` : 'A frame needs a string "type".');
      }
    } catch (err) {
      this.sendError(requestId, err);
    }
  }

  private parse(data: RawData, isBinary: boolean): { frame?: Frame; problem?: FrameProblem } {
    if (isBinary) return { problem: { code: 'invalid_request', message: 'Frames are JSON text, not binary.' } };
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as Buffer);
    if (bytes.length > this.shared.deps.maxFrameBytes) {
      return { problem: { code: 'payload_too_large', message: `A frame can have at most ${this.shared.deps.maxFrameBytes} bytes.` } };
    }
    let value: unknown;
    try {
      value = JSON.parse(bytes.toString('utf8'));
    } catch {
      return { problem: { code: 'invalid_json', message: 'The frame is not valid JSON.' } };
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) return { problem: { code: 'invalid_request', message: 'A frame is a JSON object.' } };
    return { frame: value as Frame };
  }

  // ── authentication ──────────────────────────────────────────────────────────────────────────

  private async authenticate(token: string): Promise<void> {
    this.state = 'authenticating';
    let principal: Principal;
    try {
      principal = await this.shared.deps.authenticateToken(token);
    } catch (err) {
      if (isCredentialError(err)) this.close(4401, 'unauthorized');
      else {
        this.log.error({ err }, 'chat socket: the credential could not be checked');
        this.close(1013, 'try again later');
      }
      return;
    }
    if (this.state !== 'authenticating') return;
    if (!principal.scopes.has('chat')) {
      this.close(4403, 'forbidden');
      return;
    }
    clearTimeout(this.authTimer);
    this.principal = principal;
    this.token = token;
    this.state = 'ready';
    this.unsubscribe = this.shared.deps.pubsub.subscribe(userChannel(principal.userId), (message) => this.onPublished(message));
    this.log.debug({ user_id: principal.userId }, 'chat socket authenticated');
    this.send({ type: 'ready', user_id: principal.userId });
  }

  /** A fresh token for the same user (before the old one expires); the socket keeps going either way. */
  private async reauthenticate(frame: Frame): Promise<void> {
    if (typeof frame.token !== 'string' || frame.token === '') throw invalid('"token" is required.', 'token');
    let principal: Principal;
    try {
      principal = await this.shared.deps.authenticateToken(frame.token);
    } catch (err) {
      if (isCredentialError(err)) throw new AppError('unauthorized', 'That token is not valid; the socket keeps its current one.', 401);
      throw err;
    }
    if (principal.userId !== this.principal!.userId) throw AppError.forbidden('A socket stays with the user it was opened for.');
    if (!principal.scopes.has('chat')) throw AppError.forbidden('This credential lacks the "chat" scope.');
    this.principal = principal;
    this.token = frame.token;
    this.send({ type: 'ready', user_id: principal.userId });
  }

  /** Every heartbeat: a revoked session, device or key, or an expired token, ends the socket. */
  private async recheck(): Promise<void> {
    if (this.rechecking || this.state !== 'ready') return;
    this.rechecking = true;
    const token = this.token!;
    try {
      const principal = await this.shared.deps.authenticateToken(token);
      if (this.state !== 'ready' || token !== this.token) return;
      if (principal.userId !== this.principal!.userId || !principal.scopes.has('chat')) this.close(4401, 'revoked');
      else this.principal = principal;
    } catch (err) {
      if (this.state !== 'ready' || token !== this.token) return;
      if (isCredentialError(err)) this.close(4401, jwtExpired(token) ? 'token expired' : 'revoked');
      // The database being unreachable is not a reason to drop the user.
      else this.log.warn({ err: { message: err instanceof Error ? err.message : String(err) } }, 'chat socket: credential re-check failed');
    } finally {
      this.rechecking = false;
    }
  }

  private tick(): void {
    if (this.state === 'closed') return;
    if (this.missedPongs >= 2) {
      this.log.debug('chat socket missed two pongs: terminated');
      this.socket.terminate();
      return;
    }
    this.missedPongs++;
    this.socket.ping();
    void this.recheck();
  }

  // ── requests ────────────────────────────────────────────────────────────────────────────────

  private register(frame: Frame): { requestId: string; entry: ActiveRequest } {
    const requestId = frame.request_id;
    if (typeof requestId !== 'string' || requestId === '' || requestId.length > ID_MAX) throw invalid(`"request_id" is required: a string of 1 to ${ID_MAX} characters.`, 'request_id');
    if (this.requests.has(requestId)) throw new AppError('duplicate_request_id', `A request with request_id "${requestId}" is still running on this socket.`, 409);
    if (this.requests.size >= MAX_ACTIVE_REQUESTS) throw new AppError('rate_limited', `At most ${MAX_ACTIVE_REQUESTS} requests can run at once on one socket.`, 429);
    const entry: ActiveRequest = { cancelled: false, stop: new AbortController() };
    this.requests.set(requestId, entry);
    return { requestId, entry };
  }

  private startSend(frame: Frame): void {
    if (typeof frame.content !== 'string') throw invalid('"content" is required: a string.', 'content');
    const conversationId = optionalId(frame, 'conversation_id');
    if (frame.resumable !== undefined && typeof frame.resumable !== 'boolean') throw invalid('"resumable" is a boolean.', 'resumable');
    const { requestId, entry } = this.register(frame);
    void this.runSend(requestId, entry, { content: frame.content, conversationId, resumable: frame.resumable === true })
      .finally(() => this.requests.delete(requestId));
  }

  private async runSend(requestId: string, entry: ActiveRequest, input: { content: string; conversationId: string | undefined; resumable: boolean }): Promise<void> {
    const principal = this.principal!;
    const { chat } = this.shared;
    try {
      if (!(await this.shared.limiter.allow(principal.userId))) {
        throw new AppError('rate_limited', `At most ${this.shared.deps.messagesPerMinute} messages a minute; wait a moment.`, 429);
      }
      let conversationId = input.conversationId;
      let created = false;
      if (conversationId === undefined) {
        if (!input.content.trim()) throw invalid('The message is empty.', 'content');
        conversationId = (await chat.createConversation(principal, {})).id;
        created = true;
      }
      let started: Awaited<ReturnType<ChatService['send']>>;
      try {
        started = await chat.send(principal, conversationId, input.content, { resumable: input.resumable, requestId: `${this.request.id}:${++this.seq}` });
      } catch (err) {
        if (created) await this.discardIfEmpty(principal, conversationId);
        throw err;
      }
      const { generation, userMessage, assistantMessage } = started;
      entry.messageId = assistantMessage.id;
      // Cancelled while the model was being called, or the socket left meanwhile.
      if (entry.cancelled || (this.gone.signal.aborted && !input.resumable)) generation.cancel();
      this.send({ type: 'message', request_id: requestId, conversation_id: conversationId, user_message: userMessage, assistant_message: assistantMessage });
      await this.follow(requestId, generation, 0, conversationId, assistantMessage.id);
    } catch (err) {
      this.sendError(requestId, err);
    }
  }

  private startAttach(frame: Frame): void {
    const conversationId = optionalId(frame, 'conversation_id');
    const messageId = optionalId(frame, 'message_id');
    if (conversationId === undefined) throw invalid('"conversation_id" is required.', 'conversation_id');
    if (messageId === undefined) throw invalid('"message_id" is required.', 'message_id');
    const offset = frame.offset ?? 0;
    if (typeof offset !== 'number' || !Number.isInteger(offset) || offset < 0) throw invalid('"offset" is a non-negative integer (characters).', 'offset');
    const { requestId, entry } = this.register(frame);
    void this.runAttach(requestId, entry, conversationId, messageId, offset).finally(() => this.requests.delete(requestId));
  }

  private async runAttach(requestId: string, entry: ActiveRequest, conversationId: string, messageId: string, offset: number): Promise<void> {
    const principal = this.principal!;
    const { chat } = this.shared;
    try {
      const stored = await chat.message(principal, conversationId, messageId);
      if (stored.role !== 'assistant') throw invalid('Only assistant messages can be followed.', 'message_id');
      entry.messageId = messageId;
      const generation = chat.generation(principal, messageId);
      if (generation) {
        if (entry.cancelled) generation.cancel();
        await this.follow(requestId, generation, offset, conversationId, messageId);
        return;
      }
      // Ended, or running on another instance (then only its end can be seen from here).
      const final = stored.status === 'generating' ? await this.waitElsewhere(entry, conversationId, messageId) : stored;
      if (!final) {
        if (!this.gone.signal.aborted) this.sendError(requestId, new AppError('aborted', 'Stopped following: the reply is generated by another server instance, where it keeps running.', 409));
        return;
      }
      if (final.content.length > offset) await this.sendPaced({ type: 'delta', request_id: requestId, text: final.content.slice(offset), offset });
      this.finish(requestId, conversationId, final);
    } catch (err) {
      this.sendError(requestId, err);
    }
  }

  private cancel(frame: Frame): void {
    const requestId = frame.request_id;
    if (typeof requestId !== 'string' || requestId === '') throw invalid('"request_id" is required.', 'request_id');
    const entry = this.requests.get(requestId);
    if (!entry) throw new AppError('not_found', `No request "${requestId.slice(0, ID_MAX)}" is running on this socket.`, 404);
    entry.cancelled = true;
    // Before the generation exists, runSend cancels it as soon as it does.
    if (entry.messageId !== undefined && !this.shared.chat.cancel(this.principal!, entry.messageId)) entry.stop.abort();
  }

  /** Relays a generation from `offset`, then its stored message (`done`, or `error` when it failed). */
  private async follow(requestId: string, generation: Generation, offset: number, conversationId: string, messageId: string): Promise<void> {
    for await (const event of generation.attach(offset, this.gone.signal)) {
      if (event.type === 'delta') await this.sendPaced({ type: 'delta', request_id: requestId, text: event.text, offset: event.offset });
      else if (event.type === 'citations') await this.sendPaced({ type: 'citations', request_id: requestId, citations: event.citations });
      else {
        await generation.settled;
        if (this.gone.signal.aborted) return;
        this.finish(requestId, conversationId, await this.shared.chat.message(this.principal!, conversationId, messageId), event.error);
      }
    }
  }

  private finish(requestId: string, conversationId: string, message: MessageView, error?: { code: string; message: string }): void {
    if (message.status === 'failed') {
      this.send({ type: 'error', request_id: requestId, code: error?.code ?? message.error_code ?? 'generation_failed', message: error?.message ?? 'The reply failed.', assistant_message: message });
    } else {
      this.send({ type: 'done', request_id: requestId, conversation_id: conversationId, message, usage: message.usage });
    }
  }

  /** Waits for a reply another instance is generating to be stored; undefined when told to stop. */
  private async waitElsewhere(entry: ActiveRequest, conversationId: string, messageId: string): Promise<MessageView | undefined> {
    for (;;) {
      let wake!: () => void;
      const woken = new Promise<void>((resolve) => (wake = resolve));
      const set = this.waiters.get(conversationId) ?? new Set();
      this.waiters.set(conversationId, set);
      set.add(wake);
      const timer = setTimeout(wake, ELSEWHERE_POLL_MS);
      entry.stop.signal.addEventListener('abort', wake);
      this.gone.signal.addEventListener('abort', wake);
      try {
        const message = await this.shared.chat.message(this.principal!, conversationId, messageId);
        if (message.status !== 'generating') return message;
        if (entry.stop.signal.aborted || this.gone.signal.aborted) return undefined;
        await woken;
        if (entry.stop.signal.aborted || this.gone.signal.aborted) return undefined;
      } finally {
        clearTimeout(timer);
        entry.stop.signal.removeEventListener('abort', wake);
        this.gone.signal.removeEventListener('abort', wake);
        set.delete(wake);
        if (set.size === 0) this.waiters.delete(conversationId);
      }
    }
  }

  /** A conversation created for a send that then failed before storing anything is removed again. */
  private async discardIfEmpty(principal: Principal, conversationId: string): Promise<void> {
    try {
      const page = await this.shared.chat.listMessages(principal, conversationId, 1);
      if (page.items.length === 0) await this.shared.chat.deleteConversation(principal, conversationId);
    } catch (err) {
      this.log.warn({ err, conversation_id: conversationId }, 'chat socket: empty conversation not removed');
    }
  }

  private onPublished(message: unknown): void {
    if (typeof message !== 'object' || message === null) return;
    const { type, conversation_id: conversationId } = message as { type?: unknown; conversation_id?: unknown };
    if (type !== 'conversation.updated' || typeof conversationId !== 'string') return;
    this.send({ type: 'conversation.updated', conversation_id: conversationId });
    for (const wake of this.waiters.get(conversationId) ?? []) wake();
  }

  // ── output ──────────────────────────────────────────────────────────────────────────────────

  private send(frame: Record<string, unknown>): void {
    if (this.socket.readyState === this.socket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  /** Sends, then waits while the client is not reading (its buffer above the high-water mark). */
  private async sendPaced(frame: Record<string, unknown>): Promise<void> {
    this.send(frame);
    while (this.socket.readyState === this.socket.OPEN && this.socket.bufferedAmount > HIGH_WATER_BYTES) {
      await new Promise((resolve) => setTimeout(resolve, DRAIN_POLL_MS));
    }
  }

  private sendError(requestId: string | undefined, err: unknown): void {
    let code: string;
    let message: string;
    if (err instanceof AppError) {
      code = err.code;
      message = err.message;
    } else if (isProblem(err)) {
      ({ code, message } = err);
    } else {
      this.log.error({ err, request_id: requestId }, 'chat socket request failed');
      code = 'internal_error';
      message = 'Something went wrong on the server.';
    }
    this.send({ type: 'error', ...(requestId !== undefined ? { request_id: requestId } : {}), code, message });
  }

  private close(code: number, reason: string): void {
    if (this.state === 'closing' || this.state === 'closed') return;
    this.state = 'closing';
    this.socket.close(code, reason);
  }

  private onClose(code: number): void {
    this.state = 'closed';
    clearInterval(this.heartbeat);
    clearTimeout(this.authTimer);
    this.unsubscribe?.();
    this.gone.abort();
    this.shared.connections.delete(this);
    this.shared.gauge.dec();
    this.log.debug({ code, user_id: this.principal?.userId, running: this.requests.size }, 'chat socket closed');
  }
}

// ── helpers ───────────────────────────────────────────────────────────────────────────────────

const invalid = (message: string, field?: string): AppError => AppError.badRequest(message, field ? [{ field, message }] : undefined);

function optionalId(frame: Frame, field: string): string | undefined {
  const value = frame[field];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || value === '' || value.length > ID_MAX) throw invalid(`"${field}" is a string of 1 to ${ID_MAX} characters.`, field);
  return value;
}

function isProblem(value: unknown): value is FrameProblem {
  return typeof value === 'object' && value !== null && typeof (value as FrameProblem).code === 'string' && typeof (value as FrameProblem).message === 'string';
}

/** A credential that is not (or no longer) valid, as opposed to the check itself failing. */
function isCredentialError(err: unknown): boolean {
  return err instanceof AppError && (err.statusCode === 401 || err.statusCode === 403);
}

/** Whether a JWT's `exp` has passed (read without verifying: only to word the close reason). */
function jwtExpired(token: string): boolean {
  const parts = token.split('.');
  if (parts.length !== 3) return false;
  try {
    const { exp } = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { exp?: unknown };
    return typeof exp === 'number' && exp * 1000 <= Date.now();
  } catch {
    return false;
  }
}

function originOf(url: string): string | undefined {
  try {
    const parsed = new URL(url);
    return parsed.protocol === 'http:' || parsed.protocol === 'https:' ? parsed.origin : undefined;
  } catch {
    return undefined;
  }
}

async function waitUntil(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
}

function connectionGauge(ctx: ModuleContext): Gauge {
  const name = 'keel_chat_ws_connections';
  const existing = ctx.metrics.registry.getSingleMetric(name);
  if (existing) return existing as Gauge;
  return new Gauge({ name, help: 'Open chat WebSockets on this instance', registers: [ctx.metrics.registry] });
}

interface SendLimiter {
  allow(userId: string): Promise<boolean>;
}

/**
 * `send` frames per user per minute: a window opens at a user's first send and lasts a minute (as the
 * HTTP limits count). Counted in Redis when Keel has it, so the limit holds across instances, else in
 * memory. Like the HTTP limits, it lets sends through when Redis cannot be reached, and is off when
 * rate limiting is.
 */
function createSendLimiter(ctx: ModuleContext, perMinute: number): SendLimiter {
  const windowMs = 60_000;
  if (!ctx.config.rateLimit.enabled) return { allow: async () => true };
  const redis = ctx.redis;
  if (redis) {
    const prefix = `${ctx.config.redisKeyPrefix}chat-ws:`;
    return {
      async allow(userId) {
        const key = prefix + userId;
        try {
          const result = await redis.multi().set(key, 0, 'PX', windowMs, 'NX').incr(key).exec();
          const count = Number(result?.[1]?.[1]);
          return !(count > perMinute);
        } catch {
          return true;
        }
      },
    };
  }
  const counts = new Map<string, { start: number; n: number }>();
  return {
    async allow(userId) {
      const now = Date.now();
      if (counts.size > 10_000) for (const [k, v] of counts) if (now - v.start >= windowMs) counts.delete(k);
      const entry = counts.get(userId);
      if (!entry || now - entry.start >= windowMs) {
        counts.set(userId, { start: now, n: 1 });
        return perMinute >= 1;
      }
      entry.n++;
      return entry.n <= perMinute;
    },
  };
}
