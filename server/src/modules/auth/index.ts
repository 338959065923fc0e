import type { Guards } from '../../platform/auth.js';
import type { KeelModule } from '../../platform/module.js';
import { adminRoutes } from './admin.routes.js';
import { apiKeyRoutes } from './api-keys.routes.js';
import { authRoutes } from './auth.routes.js';
import type { AuthService } from './auth.service.js';
import { googleRoutes } from './google.routes.js';
import { totpRoutes } from './totp.routes.js';

/** The identity module: every route file of modules/auth, registered with the shared AuthService. */
export function authModule(auth: AuthService, guards: Guards): KeelModule {
  return async (app, ctx) => {
    await authRoutes(app, ctx, auth, guards);
    await apiKeyRoutes(app, ctx, auth, guards);
    await adminRoutes(app, ctx, auth, guards);
    await googleRoutes(app, ctx, auth);
    await totpRoutes(app, ctx, auth, guards);
  };
}
