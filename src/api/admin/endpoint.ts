// The admin endpoint of a server on the embedded database. PGlite admits one process, so while
// `openft serve` holds the data dir, `openft keys create` and `openft workers create` ask the
// server to do it. It is not part of the API: its own listener on 127.0.0.1 (a random port, never
// the API's address), one secret per server start in `<data dir>/admin.json` (mode 0600, so only
// who may read the data dir, and could open the database anyway, may call it), and the file
// names the pid that wrote it so that a file left by a killed server is never trusted.
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import fs from "node:fs/promises";
import http from "node:http";
import path from "node:path";

export const ADMIN_FILE = "admin.json";
const MAX_BODY = 64 * 1024;

export interface AdminActions {
  /** A new API key for the project (created if missing). */
  createKey(project: string): Promise<string>;
  /** A new worker and its token. */
  createWorker(name: string): Promise<string>;
  /** A new admin key (checkpoint permissions); the name is ignored. */
  createAdminKey(name: string): Promise<string>;
}

interface AdminInfo {
  readonly pid: number;
  readonly url: string;
  readonly secret: string;
}

/** The routes: POST body `{"name": "..."}`, reply `{"secret": "..."}`. */
export const ADMIN_ROUTES = {
  keys: "/admin/v1/keys",
  workers: "/admin/v1/workers",
  adminKeys: "/admin/v1/admin-keys",
} as const;

const digest = (s: string) => createHash("sha256").update(s).digest();

function reply(res: http.ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function readName(req: http.IncomingMessage): Promise<string | undefined> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(chunk);
  }
  try {
    const { name } = JSON.parse(Buffer.concat(chunks).toString("utf8")) as { name?: unknown };
    return typeof name === "string" && name.length > 0 && name.length <= 256 ? name : undefined;
  } catch {
    return undefined;
  }
}

function handler(secret: string, actions: AdminActions) {
  const expected = digest(`Bearer ${secret}`);
  return async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const loopback = ["127.0.0.1", "::1", "::ffff:127.0.0.1"].includes(req.socket.remoteAddress ?? "");
    if (!loopback) return reply(res, 403, { error: { message: "loopback only" } });
    if (!timingSafeEqual(digest(req.headers.authorization ?? ""), expected)) return reply(res, 401, { error: { message: "bad admin secret" } });
    const routes: Record<string, (name: string) => Promise<string>> = {
      [ADMIN_ROUTES.keys]: actions.createKey,
      [ADMIN_ROUTES.workers]: actions.createWorker,
      [ADMIN_ROUTES.adminKeys]: actions.createAdminKey,
    };
    const action = Object.hasOwn(routes, req.url ?? "") ? routes[req.url!] : undefined;
    if (req.method !== "POST" || !action) return reply(res, 404, { error: { message: "no such admin route" } });
    const name = await readName(req);
    if (name === undefined) return reply(res, 400, { error: { message: 'the body must be {"name": "1 to 256 characters"}' } });
    try {
      reply(res, 200, { secret: await action(name) });
    } catch (err) {
      reply(res, 500, { error: { message: (err as Error).message } });
    }
  };
}

/** Listens on loopback and publishes the address and a fresh secret in the data dir. */
export async function startAdminEndpoint(dataDir: string, actions: AdminActions): Promise<{ close(): Promise<void> }> {
  const secret = randomBytes(32).toString("hex");
  const server = http.createServer((req, res) => void handler(secret, actions)(req, res));
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const info: AdminInfo = { pid: process.pid, url: `http://127.0.0.1:${port}`, secret };
  const file = path.join(dataDir, ADMIN_FILE);
  const tmp = `${file}.${process.pid}`;
  await fs.writeFile(tmp, JSON.stringify(info), { mode: 0o600 });
  await fs.rename(tmp, file); // appears whole
  return {
    async close() {
      await fs.rm(file, { force: true });
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** Asks the server with this pid; undefined when it has not published its endpoint (yet). */
export async function adminCall(dataDir: string, pid: number, route: string, name: string): Promise<string | undefined> {
  let info: AdminInfo;
  try {
    info = JSON.parse(await fs.readFile(path.join(dataDir, ADMIN_FILE), "utf8")) as AdminInfo;
  } catch {
    return undefined;
  }
  if (info.pid !== pid) return undefined;
  const res = await fetch(`${info.url}${route}`, {
    method: "POST",
    headers: { authorization: `Bearer ${info.secret}`, "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = (await res.json()) as { secret?: string; error?: { message: string } };
  if (!res.ok || !body.secret) throw new Error(`the running server (pid ${pid}) refused: ${body.error?.message ?? res.status}`);
  return body.secret;
}
