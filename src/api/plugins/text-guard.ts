// One guard for text that PostgreSQL cannot store: text and jsonb reject NUL (U+0000), and jsonb
// rejects an unpaired UTF-16 surrogate ("\ud800", which JSON.parse accepts). Checked once for
// every route, before any handler, on path parameters, the query and a parsed JSON body; the
// multipart upload checks its own fields with `unstorableAt`.
import type { FastifyInstance } from "fastify";
import { ApiError } from "../errors.js";

// A high surrogate not followed by a low one, or a low one not preceded by a high one.
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const storable = (s: string) => !s.includes("\u0000") && !LONE_SURROGATE.test(s);

/** The param path (dot-joined, as zod issues are named) of the first string in `value` that
 *  cannot be stored; a bad object key names its parent. `null` path: the value itself. */
export function unstorableAt(value: unknown, at: string | null = null): { param: string | null } | undefined {
  if (typeof value === "string") return storable(value) ? undefined : { param: at };
  if (value === null || typeof value !== "object") return undefined;
  if (!Array.isArray(value) && Object.getPrototypeOf(value) !== Object.prototype) return undefined; // streams, buffers
  for (const [k, v] of Object.entries(value)) {
    if (!storable(k)) return { param: at };
    const found = unstorableAt(v, at === null ? k : `${at}.${k}`);
    if (found) return found;
  }
  return undefined;
}

export function unstorableError(param: string | null): ApiError {
  const where = param ? ` - '${param}'` : "";
  return ApiError.badRequest(
    `Invalid value: text may not contain NUL (U+0000) characters or unpaired UTF-16 surrogates${where}`,
    param,
    "invalid_value",
  );
}

export function registerTextGuard(app: FastifyInstance): void {
  app.addHook("preValidation", async (request) => {
    // An id that cannot be stored names nothing that exists: the same 404 as any unknown id.
    for (const [name, id] of Object.entries((request.params ?? {}) as Record<string, string>)) {
      if (!storable(id)) throw ApiError.unknownId(name, id);
    }
    // Query keys are names as sent (`metadata[k]`), not paths.
    for (const [key, value] of Object.entries((request.query ?? {}) as Record<string, unknown>)) {
      if (!storable(key)) throw unstorableError(null);
      if (unstorableAt(value)) throw unstorableError(key);
    }
    const bad = unstorableAt(request.body);
    if (bad) throw unstorableError(bad.param);
  });
}
