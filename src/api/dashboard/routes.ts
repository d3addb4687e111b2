// The web dashboard (dashboard/ in the repository): its page and stylesheet from the source
// folder, its scripts as tsc built them into dist/dashboard, and uPlot from node_modules. Only
// these files are served, and the page may load nothing from any other origin (CSP).
import fs from "node:fs/promises";
import path from "node:path";
import type { FastifyInstance } from "fastify";
import { projectRoot } from "../../project-root.js";
import { ApiError } from "../errors.js";

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json",
};

const CSP = "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** File name -> path on disk, listed once at start-up. */
async function listFiles(root: string): Promise<Map<string, string>> {
  const files = new Map<string, string>();
  const add = async (dir: string, keep: (name: string) => boolean) => {
    const names = await fs.readdir(dir).catch(() => [] as string[]);
    for (const name of names) if (keep(name)) files.set(name, path.join(dir, name));
  };
  await add(path.join(root, "dashboard", "src"), (n) => n.endsWith(".html") || n.endsWith(".css"));
  await add(path.join(root, "dist", "dashboard"), (n) => n.endsWith(".js") || n.endsWith(".js.map"));
  await add(path.join(root, "node_modules", "uplot", "dist"), (n) => n === "uPlot.iife.min.js" || n === "uPlot.min.css");
  return files;
}

export function registerDashboard(app: FastifyInstance): void {
  const files = listFiles(projectRoot());
  const send = async (name: string) => {
    const file = (await files).get(name);
    if (!file) throw ApiError.notFound(`The dashboard has no file '${name}'.`);
    return { body: await fs.readFile(file), type: TYPES[path.extname(name)] ?? "application/octet-stream" };
  };
  app.get("/dashboard", async (_request, reply) => {
    const { body, type } = await send("index.html");
    return reply.header("content-type", type).header("content-security-policy", CSP).header("cache-control", "no-cache").send(body);
  });
  app.get<{ Params: { file: string } }>("/dashboard/:file", async (request, reply) => {
    const { body, type } = await send(request.params.file);
    return reply.header("content-type", type).header("cache-control", "no-cache").send(body);
  });
}
