// Bearer API keys. Each key belongs to a project; every /v1 request runs as that project.
// OPENFT_API_KEY, when set, is a key of the default project (one variable for a fresh install).
// Admin keys belong to no project: they may call only the routes marked `config: { admin: true }`
// (checkpoint permissions), which project keys may not (403, as OpenAI answers).
import { timingSafeEqual } from "node:crypto";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { sha256Hex } from "../../ids.js";
import type { Db } from "../../storage/db.js";
import { findProjectByKeyHash, isAdminKeyHash, type Project } from "../../storage/repos/projects.js";
import { ApiError } from "../errors.js";

declare module "fastify" {
  interface FastifyRequest {
    project: Project;
  }
  interface FastifyContextConfig {
    admin?: boolean;
  }
}

const ADMIN_ONLY = "This route needs an admin key (`openft keys create --admin`); project keys cannot manage checkpoint permissions.";
const PROJECT_ONLY = "Admin keys can only manage checkpoint permissions; use a project key for this route.";

export interface AuthDeps {
  readonly db: Db;
  readonly envKey: string | undefined;
  readonly defaultProject: Project;
}

function bearer(request: FastifyRequest): string | undefined {
  const h = request.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m?.[1];
}

export function maskKey(key: string): string {
  return key.length <= 8 ? "****" : `${key.slice(0, 3)}*********${key.slice(-4)}`;
}

export function registerAuth(app: FastifyInstance, deps: AuthDeps): void {
  const envHash = deps.envKey ? Buffer.from(sha256Hex(deps.envKey), "hex") : undefined;
  app.decorateRequest("project", null as unknown as Project);
  app.addHook("onRequest", async (request) => {
    // The matched route, not the raw URL: the router ignores duplicate slashes and decodes the
    // path, so "//v1/files" or "/%761/files" reach /v1 handlers too.
    const route = request.routeOptions.url;
    if (route === undefined || !route.startsWith("/v1/")) return;
    const key = bearer(request);
    if (!key) {
      throw ApiError.unauthorized(
        "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
      );
    }
    const hash = sha256Hex(key);
    const adminRoute = request.routeOptions.config.admin === true;
    const project =
      envHash && timingSafeEqual(envHash, Buffer.from(hash, "hex")) ? deps.defaultProject : await findProjectByKeyHash(deps.db, hash);
    if (project) {
      if (adminRoute) throw ApiError.forbidden(ADMIN_ONLY);
      request.project = project;
      return;
    }
    if (!(await isAdminKeyHash(deps.db, hash))) throw ApiError.unauthorized(`Incorrect API key provided: ${maskKey(key)}.`);
    if (!adminRoute) throw ApiError.forbidden(PROJECT_ONLY);
  });
}
