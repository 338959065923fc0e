import type { Principal } from '../../platform/auth.js';
import type { KeelModule } from '../../platform/module.js';
import { chatRoutes } from './chat.routes.js';
import type { ChatService } from './chat.service.js';
import { chatSocketRoutes } from './chat.ws.js';

/** Chat: conversations and messages over HTTP (JSON and SSE) and the `/ws/chat` WebSocket. */
export function chatModule(chat: ChatService, authenticateToken: (token: string) => Promise<Principal>): KeelModule {
  return async (app, ctx) => {
    await chatRoutes(app, ctx, chat, { heartbeatMs: ctx.config.llm.heartbeatSeconds * 1000, messagesPerMinute: ctx.config.chat.messagesPerMinute });
    await chatSocketRoutes(app, ctx, chat, {
      authenticateToken,
      pubsub: ctx.pubsub,
      heartbeatMs: ctx.config.chat.wsHeartbeatMs,
      maxFrameBytes: ctx.config.chat.wsMaxFrameBytes,
      messagesPerMinute: ctx.config.chat.messagesPerMinute,
    });
  };
}
