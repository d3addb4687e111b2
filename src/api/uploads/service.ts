// The Uploads API's logic, free of HTTP. Each part is its own blob (uploads/<upload>/<part>),
// streamed as it arrives; complete streams the parts in the caller's order once, through the
// md5 and `.jsonl` line checks, into files/<file> and then writes the File row and `completed`
// in one transaction. Parts are separate blobs rather than the parts of one S3 multipart upload
// because their order is known only at complete, their length only once streamed (UploadPart
// needs a Content-Length), and S3 refuses non-last parts under 5 MiB, which clients may send.
import { createHash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
import type { Logger } from "pino";
import { newId, nowSeconds, randomAlnum } from "../../ids.js";
import type { BlobStore, Db } from "../../storage/index.js";
import * as repo from "../../storage/repos/uploads.js";
import { ApiError } from "../errors.js";
import { checkFileContent } from "../files/content-check.js";
import { JsonlCheck } from "../files/jsonl-check.js";
import { toPartObject, toUploadObject, wireStatus, type CompleteUploadBody, type CreateUploadBody, type UploadObject } from "./schema.js";

/** OpenAI's limit for one part. */
export const MAX_PART_BYTES = 64 * 1024 * 1024;

export interface UploadsDeps {
  readonly db: Db;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly maxBytes: number;
  readonly expirySeconds: number;
  /** How long a complete holds the upload before the sweeper may undo it (renewed while alive). */
  readonly leaseMs: number;
}

class Md5Pass extends Transform {
  private readonly hash = createHash("md5");
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    cb(null, chunk);
  }
  hex(): string {
    return this.hash.digest("hex");
  }
}

function notPending(row: repo.UploadRow): ApiError {
  const status = wireStatus(row, nowSeconds());
  return ApiError.badRequest(`Upload ${row.id} is ${status === "pending" ? "being completed" : status}; it no longer accepts this request.`, "upload_id", "invalid_upload_state");
}

function resetWhileCompleting(uploadId: string): ApiError {
  return ApiError.conflict(`Upload ${uploadId} was reset while it was being completed; complete it again.`, "upload_id");
}

/**
 * The lease a complete holds on its upload, renewed while it streams. Its value is the attempt's
 * token (see repos/uploads.ts): stop() ends the renewals and gives the value to finish or undo
 * with, or undefined once the lease was lost (lapsed, so the sweeper owns the upload).
 */
class CompleteLease {
  private value: number | undefined;
  private inflight: Promise<void> = Promise.resolve();
  private readonly timer: NodeJS.Timeout;

  constructor(db: Db, uploadId: string, first: number, leaseMs: number, log: Logger) {
    this.value = first;
    this.timer = setInterval(() => {
      this.inflight = this.inflight.then(async () => {
        if (this.value === undefined) return;
        try {
          const now = Date.now();
          this.value = await repo.renewComplete(db, uploadId, this.value, now + leaseMs, now);
          if (this.value === undefined) log.warn({ uploadId }, "a complete lost its lease; the sweeper will undo it");
        } catch (err) {
          log.warn({ err, uploadId }, "could not renew complete lease");
        }
      });
    }, Math.max(250, Math.floor(leaseMs / 3)));
    this.timer.unref();
  }

  async stop(): Promise<number | undefined> {
    clearInterval(this.timer);
    await this.inflight;
    return this.value;
  }
}

export class UploadsService {
  constructor(private readonly deps: UploadsDeps) {}

  private async mustGet(projectId: string, id: string): Promise<repo.UploadRow> {
    const row = await repo.getUpload(this.deps.db, projectId, id);
    if (!row) throw ApiError.notFound(`No such Upload object: ${id}`, "upload_id");
    return row;
  }

  private async toObject(row: repo.UploadRow): Promise<UploadObject> {
    return toUploadObject(row, await repo.getFileOf(this.deps.db, row), nowSeconds());
  }

  async create(projectId: string, body: CreateUploadBody): Promise<UploadObject> {
    if (body.bytes > this.deps.maxBytes) {
      throw ApiError.badRequest(`An upload may be at most ${this.deps.maxBytes} bytes; got ${body.bytes}.`, "bytes", "file_too_large");
    }
    if (body.purpose === "fine-tune" && !body.filename.toLowerCase().endsWith(".jsonl")) {
      throw ApiError.badRequest("Invalid file format for Fine-Tuning API. Must be .jsonl", "filename", "invalid_file_format");
    }
    const now = nowSeconds();
    const row = await repo.insertUpload(this.deps.db, {
      id: newId.upload(),
      projectId,
      filename: body.filename,
      purpose: body.purpose,
      bytes: body.bytes,
      mimeType: body.mime_type,
      fileExpiresAfter: body.expires_after?.seconds ?? null,
      status: "pending",
      createdAt: now,
      expiresAt: now + this.deps.expirySeconds,
    });
    return toUploadObject(row, undefined, now);
  }

  /** Streams one part to its own blob; the part row exists before the first byte lands. */
  async addPart(projectId: string, uploadId: string, body: Readable, truncated: () => boolean) {
    const { db, blobs } = this.deps;
    const upload = await this.mustGet(projectId, uploadId);
    const part = { id: `part_${randomAlnum(24)}`, blobKey: `uploads/${uploadId}/`, createdAt: nowSeconds() };
    part.blobKey += part.id;
    if (!(await repo.beginPart(db, uploadId, part))) {
      body.resume();
      throw notPending(upload);
    }
    let bytes: number;
    try {
      bytes = (await blobs.put(part.blobKey, body)).bytes;
      if (truncated()) throw ApiError.badRequest(`A part may be at most ${MAX_PART_BYTES} bytes (64 MB).`, "data", "file_too_large");
      const received = await repo.receivedBytes(db, uploadId);
      // One part of slack: a part the SDK re-sends after a lost response is counted twice.
      if (received + bytes > upload.bytes + MAX_PART_BYTES) {
        throw ApiError.badRequest(`The parts would exceed the upload's declared ${upload.bytes} bytes.`, "data", "invalid_value");
      }
      if (!(await repo.endPart(db, part.id, bytes))) throw notPending(await this.mustGet(projectId, uploadId));
    } catch (err) {
      await this.dropPart(part);
      throw err;
    }
    return toPartObject({ ...part, uploadId, bytes });
  }

  private async dropPart(part: { id: string; blobKey: string }): Promise<void> {
    try {
      await this.deps.blobs.discard(part.blobKey);
      await repo.deletePart(this.deps.db, part.id);
    } catch (err) {
      this.deps.log.warn({ err, partId: part.id }, "could not drop a part; the sweeper will when its upload ends");
    }
  }

  /** The parts named by part_ids, in that order, after checking each and their total. */
  private async orderedParts(upload: repo.UploadRow, partIds: readonly string[]): Promise<repo.PartRow[]> {
    const byId = new Map((await repo.listParts(this.deps.db, upload.id)).map((p) => [p.id, p]));
    const seen = new Set<string>();
    const out = partIds.map((id, i) => {
      const p = byId.get(id);
      if (!p) throw ApiError.badRequest(`No such part in upload ${upload.id}: ${id}`, `part_ids[${i}]`, "invalid_value");
      if (p.bytes === null) throw ApiError.badRequest(`Part ${id} has not finished uploading.`, `part_ids[${i}]`, "invalid_value");
      if (seen.has(id)) throw ApiError.badRequest(`Part ${id} is listed twice.`, `part_ids[${i}]`, "invalid_value");
      seen.add(id);
      return p;
    });
    const total = out.reduce((n, p) => n + p.bytes!, 0);
    if (total !== upload.bytes) {
      throw ApiError.badRequest(
        `The parts add up to ${total} bytes, but the upload was created with bytes=${upload.bytes}.`,
        "part_ids",
        "invalid_upload_size",
      );
    }
    return out;
  }

  async complete(projectId: string, uploadId: string, body: CompleteUploadBody): Promise<UploadObject> {
    const { db } = this.deps;
    const upload = await this.mustGet(projectId, uploadId);
    // A retried complete (the first one's response lost) gets the same upload and File.
    if (upload.status === "completed") return this.toObject(upload);
    if (upload.status === "completing") {
      throw ApiError.conflict(`Upload ${uploadId} is being completed by another request.`, "upload_id");
    }
    if (wireStatus(upload, nowSeconds()) !== "pending") throw notPending(upload);
    const parts = await this.orderedParts(upload, body.part_ids);
    const started = await repo.beginComplete(db, uploadId, newId.file(), Date.now() + this.deps.leaseMs, nowSeconds());
    if (!started) throw notPending(await this.mustGet(projectId, uploadId));
    const lease = new CompleteLease(db, uploadId, started.completeLeaseExpiresAt!, this.deps.leaseMs, this.deps.log);
    const fileKey = `files/${started.fileId!}`;
    try {
      const file = await this.writeFile(started, parts, body.md5 ?? undefined, fileKey, lease);
      for (const p of parts) await this.dropPart(p);
      return toUploadObject({ ...started, status: "completed" }, file, nowSeconds());
    } catch (err) {
      // Blob first, then row, and only while this attempt still holds a live lease: once the
      // upload is pending again a new complete may write the same key. A lost lease is the
      // sweeper's to undo (it discards the blob before the row goes back to pending).
      const held = await lease.stop();
      let undone = false;
      if (held !== undefined && held > Date.now()) {
        await this.deps.blobs.discard(fileKey).catch(() => undefined);
        undone = (await repo.undoComplete(db, uploadId, held, Date.now())) !== undefined;
      }
      if (!undone && !(err instanceof ApiError)) {
        this.deps.log.warn({ err, uploadId }, "complete failed after its lease was lost");
        throw resetWhileCompleting(uploadId);
      }
      throw err;
    } finally {
      await lease.stop();
    }
  }

  /** One pass over the parts in order: md5, line check and sha256 on the way into the File's blob. */
  private async writeFile(upload: repo.UploadRow, parts: readonly repo.PartRow[], md5: string | undefined, fileKey: string, lease: CompleteLease) {
    const { blobs, db } = this.deps;
    const md5Pass = new Md5Pass();
    const check = upload.purpose === "fine-tune" ? new JsonlCheck() : undefined;
    const source = Readable.from(concatBlobs(blobs, parts.map((p) => p.blobKey)), { objectMode: false, highWaterMark: 1 << 20 });
    source.on("error", (err) => md5Pass.destroy(err));
    md5Pass.on("error", (err) => check?.destroy(err));
    const piped = check ? source.pipe(md5Pass).pipe(check) : source.pipe(md5Pass);
    const written = await blobs.put(fileKey, piped);
    if (md5 !== undefined && md5Pass.hex() !== md5.toLowerCase()) {
      throw ApiError.badRequest("The md5 checksum of the uploaded bytes does not match 'md5'.", "md5", "checksum_mismatch");
    }
    checkFileContent(
      { filename: upload.filename, bytes: written.bytes, tooLarge: false, jsonl: check ? { problem: check.problem, lines: check.lines } : undefined },
      upload.purpose,
      this.deps.maxBytes,
      "part_ids",
    );
    const createdAt = nowSeconds();
    const expiresAfter = upload.fileExpiresAfter ?? (upload.purpose === "batch" ? 30 * 24 * 3600 : null);
    const held = await lease.stop();
    const file = held === undefined ? undefined : await repo.finishComplete(db, upload.id, held, Date.now(), {
      id: upload.fileId!,
      projectId: upload.projectId,
      filename: upload.filename,
      purpose: upload.purpose,
      bytes: written.bytes,
      sha256: written.sha256,
      blobKey: fileKey,
      createdAt,
      expiresAt: expiresAfter === null ? null : createdAt + expiresAfter,
    });
    if (!file) throw resetWhileCompleting(upload.id);
    return file;
  }

  async cancel(projectId: string, uploadId: string): Promise<UploadObject> {
    const upload = await this.mustGet(projectId, uploadId);
    if (upload.status === "cancelled") return this.toObject(upload);
    const row = wireStatus(upload, nowSeconds()) === "pending" ? await repo.cancelUpload(this.deps.db, uploadId) : undefined;
    if (!row) throw notPending(await this.mustGet(projectId, uploadId));
    for (const p of await repo.listParts(this.deps.db, uploadId)) await this.dropPart(p);
    return this.toObject(row);
  }
}

async function* concatBlobs(blobs: BlobStore, keys: readonly string[]): AsyncGenerator<Buffer> {
  for (const key of keys) {
    for await (const chunk of await blobs.get(key)) yield chunk as Buffer;
  }
}
