import type { KeelModule } from '../../platform/module.js';
import { chatRoutes } from './chat.routes.js';
import type { ChatService } from './chat.service.js';

/** Chat: conversations and messages over HTTP (JSON and SSE). */
export function chatModule(chat: ChatService): KeelModule {
  return async (app, ctx) => {
    await chatRoutes(app, ctx, chat, { heartbeatMs: ctx.config.llm.heartbeatSeconds * 1000, messagesPerMinute: ctx.config.chat.messagesPerMinute });
  };
}
