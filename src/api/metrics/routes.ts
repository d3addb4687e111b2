// GET /metrics in Prometheus's text format, and the HTTP families it reports (by route template,
// never the raw URL, so ids never become label values). With a token configured, scrapers must
// send it as a bearer token; a wrong one is a 401 in OpenAI's envelope like any other.
import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance } from "fastify";
import { sha256Hex } from "../../ids.js";
import * as stats from "../../jobs/stats.js";
import type { ServingRouter } from "../../engine/serving/index.js";
import { Metrics } from "../../metrics/index.js";
import type { Db } from "../../storage/db.js";
import { ApiError } from "../errors.js";

export interface MetricsOptions {
  /** main.ts makes it first, so the serving engine can report engine steps into it. */
  readonly metrics?: Metrics;
  /** false: no /metrics route. */
  readonly enabled: boolean;
  readonly token: string | undefined;
}

export interface MetricsSources {
  readonly db: Db;
  readonly router: ServingRouter;
  readonly workerLeaseMs: number;
}

function tokenMatches(expected: string, header: string | undefined): boolean {
  const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  if (!m) return false;
  return timingSafeEqual(Buffer.from(sha256Hex(expected), "hex"), Buffer.from(sha256Hex(m[1]!), "hex"));
}

/** The registry (made here when none is given) wired to the database and the serving router, and
 *  the route that serves it. */
export function registerMetrics(app: FastifyInstance, opts: MetricsOptions | undefined, src: MetricsSources): Metrics {
  const metrics = opts?.metrics ?? new Metrics();
  metrics.watchJobs({
    queue: () => stats.queueStats(src.db),
    workers: () => stats.recentWorkers(src.db),
    running: () => stats.runningJobStats(src.db),
    connectedWithinSeconds: src.workerLeaseMs / 1000,
  });
  metrics.serving.addSource(() =>
    src.router.stats().map((m) => ({
      backend: m.backend, baseModel: m.model, queued: m.queued,
      adaptersLoaded: m.adapters.loaded, adapterLoads: m.adapters.loads, adapterEvictions: m.adapters.evictions,
    })));
  registerMetricsRoute(app, metrics, opts?.enabled ?? true, opts?.token);
  return metrics;
}

function registerMetricsRoute(app: FastifyInstance, metrics: Metrics, enabled: boolean, token: string | undefined): void {
  app.addHook("onResponse", async (request, reply) => {
    metrics.observeHttp(request.method, request.routeOptions.url ?? "unmatched", reply.statusCode, reply.elapsedTime / 1000);
  });
  if (!enabled) return;
  app.get("/metrics", async (request, reply) => {
    if (token !== undefined && !tokenMatches(token, request.headers.authorization)) {
      throw ApiError.unauthorized("/metrics needs the metrics token (OPENFT_METRICS_TOKEN) as a bearer token.");
    }
    return reply.header("content-type", metrics.contentType()).send(await metrics.text());
  });
}
