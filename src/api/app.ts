// buildApp assembles the HTTP API from its dependencies and never listens: tests inject(),
// main.ts listens.
import multipart from "@fastify/multipart";
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from "fastify";
import type { Logger } from "pino";
import { newId } from "../ids.js";
import type { BlobStore, Db } from "../storage/index.js";
import type { Project } from "../storage/repos/projects.js";
import type { BaseModels } from "../jobs/base-models.js";
import type { Wakeup } from "../jobs/wakeup.js";
import type { ServingRouter } from "../engine/serving/index.js";
import { registerChatRoutes } from "./chat/routes.js";
import { ChatService } from "./chat/service.js";
import { registerInternalRoutes } from "./internal/routes.js";
import { registerModelRoutes } from "./models/routes.js";
import { ModelsService } from "./models/service.js";
import { InternalService } from "./internal/service.js";
import { registerWorkerAuth } from "./plugins/worker-auth.js";
import { registerFileRoutes } from "./files/routes.js";
import { registerFineTuningRoutes } from "./fine-tuning/routes.js";
import { FineTuningService } from "./fine-tuning/service.js";
import { registerUnsupportedFineTuningRoutes } from "./fine-tuning/unsupported.js";
import { registerCheckpointPermissionRoutes } from "./checkpoint-permissions/routes.js";
import { CheckpointPermissionsService } from "./checkpoint-permissions/service.js";
import { FilesService } from "./files/service.js";
import { registerUploadRoutes } from "./uploads/routes.js";
import { UploadsService } from "./uploads/service.js";
import { registerHealthRoutes, type ReadinessProbe } from "./health/routes.js";
import { registerAuth } from "./plugins/auth.js";
import { clientErrorHandler, frameworkErrors, registerErrorHandling, registerUnknownRoutes } from "./plugins/errors.js";
import { registerTextGuard } from "./plugins/text-guard.js";
import { registerMetrics, type MetricsOptions } from "./metrics/routes.js";
import { registerDashboard } from "./dashboard/routes.js";

export interface AppDeps {
  readonly db: Db;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly apiKey: string | undefined;
  readonly defaultProject: Project;
  readonly maxUploadBytes: number;
  readonly uploadLeaseMs: number;
  /** The Uploads API: the most bytes one upload may declare, and how long a pending one lives. */
  readonly uploads: { readonly maxBytes: number; readonly expirySeconds: number };
  readonly ready: ReadinessProbe;
  readonly baseModels: BaseModels;
  /** Called after a job is created, so its files are validated at once. */
  readonly onJobCreated: () => void;
  /** Wakes long-polling worker claims when a job is (re)queued. */
  readonly wakeup: Wakeup;
  readonly workerLeaseMs: number;
  /** Whether job integrations (wandb) can be honoured; absent: they are refused. */
  readonly wandbAvailable?: () => Promise<boolean>;
  /** Chat completions: the backend of each base model, and how many sequences may wait per base
   *  model before requests get 429. */
  readonly serving: { readonly router: ServingRouter; readonly maxQueue: number };
  /** GET /metrics (on, open to all, with a registry of its own when not given). */
  readonly metrics?: MetricsOptions;
  /** Told of every route as it is registered (the openapi test compares them with the spec). */
  readonly onRoute?: (method: string, url: string) => void;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app: FastifyInstance = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    genReqId: () => newId.request(),
    bodyLimit: 16 * 1024 * 1024,
    // ft: names run past fastify's default 100 characters (a 64-character suffix, :ckpt-step-N).
    routerOptions: { ignoreTrailingSlash: true, ignoreDuplicateSlashes: true, maxParamLength: 1024 },
    frameworkErrors,
    clientErrorHandler,
  });

  const onRoute = deps.onRoute;
  if (onRoute) {
    app.addHook("onRoute", (r) => {
      for (const m of [r.method].flat()) if (m !== "HEAD") onRoute(m.toLowerCase(), r.url);
    });
  }

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
  });

  // The Python SDK sends `Content-Type: application/json` with an empty body on body-less
  // POST/DELETE (cancel, delete): that is no body, not bad JSON.
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser("application/json", { parseAs: "string" }, (_req, body, done) => {
    const text = typeof body === "string" ? body : body.toString("utf8");
    if (text.trim() === "") return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (err) {
      const e = err as Error & { statusCode?: number; code?: string };
      e.statusCode = 400;
      e.code = "FST_ERR_CTP_INVALID_JSON_BODY";
      done(e, undefined);
    }
  });

  registerErrorHandling(app);
  registerTextGuard(app);
  await app.register(multipart, {
    throwFileSizeLimit: false,
    limits: { fileSize: deps.maxUploadBytes, files: 1, fields: 16, fieldSize: 1024 * 1024, parts: 20 },
  });
  registerAuth(app, { db: deps.db, envKey: deps.apiKey, defaultProject: deps.defaultProject });
  registerWorkerAuth(app, deps.db);
  registerUnknownRoutes(app);
  registerHealthRoutes(app, deps.ready);
  const metrics = registerMetrics(app, deps.metrics, { db: deps.db, router: deps.serving.router, workerLeaseMs: deps.workerLeaseMs });
  registerDashboard(app);

  const files = new FilesService({
    db: deps.db,
    blobs: deps.blobs,
    log: deps.log,
    maxUploadBytes: deps.maxUploadBytes,
    uploadLeaseMs: deps.uploadLeaseMs,
  });
  registerFileRoutes(app, files);
  registerUploadRoutes(
    app,
    new UploadsService({ db: deps.db, blobs: deps.blobs, log: deps.log, leaseMs: deps.uploadLeaseMs, ...deps.uploads }),
  );
  registerFineTuningRoutes(
    app,
    new FineTuningService({
      db: deps.db,
      log: deps.log,
      baseModels: deps.baseModels,
      onCreated: deps.onJobCreated,
      onQueued: () => deps.wakeup.notify(),
      wandbAvailable: deps.wandbAvailable ?? (() => Promise.resolve(false)),
      maxLoraRank: (base) => deps.serving.router.maxLoraRank(base),
    }),
  );
  registerUnsupportedFineTuningRoutes(app);
  registerCheckpointPermissionRoutes(app, new CheckpointPermissionsService({ db: deps.db }));
  const chat = new ChatService({ db: deps.db, baseModels: deps.baseModels, log: deps.log, ...deps.serving, metrics: metrics.serving });
  registerChatRoutes(app, chat);
  registerModelRoutes(app, new ModelsService({ db: deps.db, baseModels: deps.baseModels, onDeleted: (id) => chat.evictModel(id) }));
  registerInternalRoutes(
    app,
    new InternalService({ db: deps.db, blobs: deps.blobs, log: deps.log, wakeup: deps.wakeup, leaseMs: deps.workerLeaseMs }),
  );
  return app;
}
