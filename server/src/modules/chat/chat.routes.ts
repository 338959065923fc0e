import type { FastifyInstance } from 'fastify';
import { Type, type Static } from 'typebox';
import { AppError } from '../../platform/errors.js';
import type { ModuleContext } from '../../platform/module.js';
import { limitPerKey } from '../../platform/rate-limit.js';
import { ANY_CREDENTIAL, AUTHED_ERRORS, errorResponses } from '../../platform/schemas.js';
import { abortOnClose, awaitOrOpen, SseStream } from '../../platform/sse.js';
import type { ChatService, MessageView } from './chat.service.js';
import type { Generation } from './generation.js';

const tags = ['chat'];
const errors = { ...AUTHED_ERRORS, ...errorResponses(413, 502, 503, 504) };
const Id = Type.String({ minLength: 1, maxLength: 64 });
const IdParams = Type.Object({ id: Id });
const MessageParams = Type.Object({ id: Id, messageId: Id });

const ConversationBody = Type.Object({
  title: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Null()])),
  preset: Type.Optional(Type.Union([Type.String({ maxLength: 64 }), Type.Null()])),
  model: Type.Optional(Type.Union([Type.String({ maxLength: 200 }), Type.Null()])),
  system_prompt: Type.Optional(Type.Union([Type.String({ maxLength: 20_000 }), Type.Null()])),
  collection_ids: Type.Optional(Type.Array(Id, { maxItems: 50 })),
}, { additionalProperties: false });

const Nullable = <T extends Parameters<typeof Type.Union>[0][number]>(t: T) => Type.Union([t, Type.Null()]);
const Conversation = Type.Object({
  id: Type.String(), title: Nullable(Type.String()), preset: Nullable(Type.String()), model: Nullable(Type.String()), system_prompt: Nullable(Type.String()),
  collection_ids: Type.Array(Type.String()), created_at: Type.String(), updated_at: Type.String(), last_activity_at: Type.String(),
});
const CitationSchema = Type.Object({ n: Type.Integer(), chunk_id: Type.String(), document_id: Type.String(), filename: Type.String(), text: Type.String() });
const Message = Type.Object({
  id: Type.String(), conversation_id: Type.String(), role: Type.String(), content: Type.String(),
  status: Type.String({ description: 'complete | generating | aborted | failed' }), model: Nullable(Type.String()),
  usage: Nullable(Type.Object({ prompt_tokens: Type.Integer(), completion_tokens: Type.Integer() })),
  citations: Nullable(Type.Array(CitationSchema)), error_code: Nullable(Type.String()), created_at: Type.String(), completed_at: Nullable(Type.String()),
});
const page = <T extends Parameters<typeof Type.Array>[0]>(item: T) => Type.Object({ items: Type.Array(item), next_cursor: Nullable(Type.String()) });

const SendBody = Type.Object({
  content: Type.String({ minLength: 1 }),
  stream: Type.Optional(Type.Boolean()),
  resumable: Type.Optional(Type.Boolean({ description: 'Keep generating if the client goes away; any of the user\'s clients can attach with GET …/messages/{id}/stream.' })),
}, { additionalProperties: false });

/** Conversations and messages over HTTP (JSON and SSE). The WebSocket endpoint lives in chat.ws.ts. */
export async function chatRoutes(app: FastifyInstance, ctx: ModuleContext, chat: ChatService, opts: { heartbeatMs: number; messagesPerMinute: number }): Promise<void> {
  const guard = ctx.guards.scope('chat');
  const perUser = limitPerKey(app, { ...ctx.config.rateLimit, authMax: opts.messagesPerMinute, authWindowMs: 60_000 }, 'chat-messages', (req) => req.principal?.userId);

  app.post('/conversations', {
    preHandler: guard, schema: { tags, summary: 'Start a conversation', security: ANY_CREDENTIAL, body: ConversationBody, response: { 201: Conversation, ...errors } },
  }, async (request, reply) => reply.code(201).send(await chat.createConversation(request.principal!, request.body as Static<typeof ConversationBody>)));

  app.get('/conversations', {
    preHandler: guard,
    schema: { tags, summary: 'The caller\'s conversations, most recent activity first', security: ANY_CREDENTIAL, querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100, default: 20 })), cursor: Type.Optional(Type.String({ maxLength: 200 })) }), response: { 200: page(Conversation), ...errors } },
  }, async (request) => {
    const q = request.query as { limit?: number; cursor?: string };
    return chat.listConversations(request.principal!, q.limit ?? 20, q.cursor);
  });

  app.get('/conversations/:id', {
    preHandler: guard, schema: { tags, summary: 'One conversation', security: ANY_CREDENTIAL, params: IdParams, response: { 200: Conversation, ...errors } },
  }, async (request) => chat.getConversation(request.principal!, (request.params as Static<typeof IdParams>).id));

  app.patch('/conversations/:id', {
    preHandler: guard, schema: { tags, summary: 'Rename a conversation or change its settings', security: ANY_CREDENTIAL, params: IdParams, body: ConversationBody, response: { 200: Conversation, ...errors } },
  }, async (request) => chat.updateConversation(request.principal!, (request.params as Static<typeof IdParams>).id, request.body as Static<typeof ConversationBody>));

  app.delete('/conversations/:id', {
    preHandler: guard, schema: { tags, summary: 'Delete a conversation and its messages', security: ANY_CREDENTIAL, params: IdParams, response: { 204: Type.Null(), ...errors } },
  }, async (request, reply) => {
    await chat.deleteConversation(request.principal!, (request.params as Static<typeof IdParams>).id);
    return reply.code(204).send();
  });

  app.get('/conversations/:id/messages', {
    preHandler: guard,
    schema: { tags, summary: 'History, oldest → newest within a page; `next_cursor` (as `before`) pages back', security: ANY_CREDENTIAL, params: IdParams, querystring: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 200, default: 50 })), before: Type.Optional(Id) }), response: { 200: page(Message), ...errors } },
  }, async (request) => {
    const q = request.query as { limit?: number; before?: string };
    return chat.listMessages(request.principal!, (request.params as Static<typeof IdParams>).id, q.limit ?? 50, q.before);
  });

  app.post('/conversations/:id/messages', {
    preHandler: [guard, perUser],
    bodyLimit: Math.max(ctx.config.bodyLimitBytes, 1024 * 1024),
    schema: {
      tags, summary: 'Send a message and get the assistant\'s reply, as JSON or streamed (SSE)',
      description: 'With `stream: true` or `Accept: text/event-stream`, events: `message` `{user_message, assistant_message}`, `delta` `{text}`, `citations` `{citations}`, `done` `{assistant_message, usage}`, `error` `{code, message}`.',
      security: ANY_CREDENTIAL, params: IdParams, body: SendBody,
      response: { 200: Type.Object({ user_message: Message, assistant_message: Message, usage: Nullable(Type.Object({ prompt_tokens: Type.Integer(), completion_tokens: Type.Integer() })), citations: Type.Array(CitationSchema) }), ...errors },
    },
  }, async (request, reply) => {
    const body = request.body as Static<typeof SendBody>;
    const wantsStream = body.stream === true || (request.headers.accept ?? '').includes('text/event-stream');
    const principal = request.principal!;
    const conversationId = (request.params as Static<typeof IdParams>).id;
    const { userMessage, assistantMessage, generation } = await chat.send(principal, conversationId, body.content, { resumable: body.resumable === true, requestId: String(request.id) });
    if (!wantsStream) {
      const gone = abortOnClose(reply);
      // Detaching when the client leaves cancels a non-resumable generation.
      for await (const _ of generation.attach(0, gone)) { /* wait for the end */ }
      if (gone.aborted) return reply;
      await generation.settled;
      const final = await chat.message(principal, conversationId, assistantMessage.id);
      return { user_message: userMessage, assistant_message: final, usage: final.usage, citations: final.citations ?? [] };
    }
    const sse = new SseStream(reply, opts.heartbeatMs);
    await sse.send(JSON.stringify({ user_message: userMessage, assistant_message: assistantMessage }), 'message');
    await streamGeneration(sse, generation, 0, opts.heartbeatMs, () => chat.message(principal, conversationId, assistantMessage.id));
    return reply;
  });

  app.get('/conversations/:id/messages/:messageId/stream', {
    preHandler: guard,
    schema: {
      tags, summary: 'Attach to a reply: its text from `offset` (characters), then live deltas until it ends',
      description: 'Works while the reply is being generated (for example by another of the user\'s devices, with `resumable: true`) and after it ended (the stored text, then `done`).',
      security: ANY_CREDENTIAL, params: MessageParams, querystring: Type.Object({ offset: Type.Optional(Type.Integer({ minimum: 0, default: 0 })) }), response: { ...errors },
    },
  }, async (request, reply) => {
    const { id, messageId } = request.params as Static<typeof MessageParams>;
    const offset = (request.query as { offset?: number }).offset ?? 0;
    const principal = request.principal!;
    const stored = await chat.message(principal, id, messageId);
    if (stored.role !== 'assistant') throw AppError.badRequest('Only assistant messages stream.', [{ field: 'messageId', message: 'is a user message' }]);
    const generation = chat.generation(principal, messageId);
    const sse = new SseStream(reply, opts.heartbeatMs);
    if (!generation) {
      if (stored.content.length > offset) await sse.send(JSON.stringify({ text: stored.content.slice(offset), offset }), 'delta');
      await finish(sse, stored);
      sse.end();
      return reply;
    }
    await streamGeneration(sse, generation, offset, opts.heartbeatMs, () => chat.message(principal, id, messageId));
    return reply;
  });
}

/** Relays a generation's events as SSE, then the stored message in `done` (or an `error`). */
async function streamGeneration(sse: SseStream, generation: Generation, offset: number, heartbeatMs: number, load: () => Promise<MessageView>): Promise<void> {
  const events = generation.attach(offset, sse.clientGone);
  try {
    let next = await awaitOrOpen(events.next(), sse, heartbeatMs);
    while (!next.done) {
      const event = next.value;
      if (event.type === 'delta') await sse.send(JSON.stringify({ text: event.text, offset: event.offset }), 'delta');
      else if (event.type === 'citations') await sse.send(JSON.stringify({ citations: event.citations }), 'citations');
      else {
        await generation.settled;
        const message = await load();
        if (event.status === 'failed') await sse.send(JSON.stringify({ code: event.error?.code ?? 'generation_failed', message: event.error?.message ?? 'The reply failed.', assistant_message: message }), 'error');
        else await finish(sse, message);
      }
      if (sse.clientGone.aborted) break;
      next = await events.next();
    }
  } finally {
    await events.return(undefined);
    sse.end();
  }
}

async function finish(sse: SseStream, message: MessageView): Promise<void> {
  await sse.send(JSON.stringify({ assistant_message: message, usage: message.usage }), 'done');
}
