// Looks straight at a test server's storage (not through the API): which blobs are visible,
// which partial uploads exist, which rows the files table holds.
import fs from "node:fs/promises";
import path from "node:path";
import { ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from "@aws-sdk/client-s3";
import { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import type { TestServer } from "./server.js";

function s3Client(endpoint: string): S3Client {
  return new S3Client({
    endpoint,
    region: "us-east-1",
    forcePathStyle: true,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
}

async function walk(dir: string, base: string): Promise<string[]> {
  let entries: import("node:fs").Dirent[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p, base)));
    else out.push(path.relative(base, p));
  }
  return out;
}

/** Keys of complete, visible blobs. */
export async function visibleBlobs(server: TestServer): Promise<string[]> {
  if (server.s3) {
    const out = await s3Client(server.s3.endpoint).send(new ListObjectsV2Command({ Bucket: server.s3.bucket }));
    return (out.Contents ?? []).map((o) => o.Key!).sort();
  }
  const root = path.join(server.dataDir, "blobs");
  return (await walk(root, root)).filter((k) => !k.startsWith(".partial")).sort();
}

/** Partial uploads left behind (incomplete multipart uploads, or .partial files). */
export async function partialBlobs(server: TestServer): Promise<string[]> {
  if (server.s3) {
    const out = await s3Client(server.s3.endpoint).send(new ListMultipartUploadsCommand({ Bucket: server.s3.bucket }));
    return (out.Uploads ?? []).map((u) => u.Key!).sort();
  }
  return (await walk(path.join(server.dataDir, "blobs", ".partial"), path.join(server.dataDir, "blobs"))).sort();
}

/** Runs a query on the server's database. For PGlite the server must be stopped first. */
export async function queryRows(server: TestServer, sql: string): Promise<Record<string, unknown>[]> {
  if (server.databaseUrl) {
    const client = new pg.Client({ connectionString: server.databaseUrl });
    await client.connect();
    try {
      return (await client.query(sql)).rows as Record<string, unknown>[];
    } finally {
      await client.end();
    }
  }
  const db = await PGlite.create(path.join(server.dataDir, "pglite"));
  try {
    return (await db.query<Record<string, unknown>>(sql)).rows;
  } finally {
    await db.close();
  }
}
