import type { KeelModule } from '../../platform/module.js';
import { jobsRoutes } from './jobs.routes.js';

/** Jobs: `GET /jobs/{id}` over the process's job queue (`ctx.jobs`, platform/jobs.ts). */
export const jobsModule: KeelModule = async (app, ctx) => {
  await jobsRoutes(app, ctx);
};
