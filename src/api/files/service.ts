// The Files API's logic, free of HTTP: receive a stream into the blob store under an upload
// lease, then commit it as a file (or abandon it); list, retrieve, delete, read content.
import path from "node:path";
import { pipeline, type Readable } from "node:stream";
import type { Logger } from "pino";
import { newId, nowSeconds } from "../../ids.js";
import type { BlobStore, Db } from "../../storage/index.js";
import * as repo from "../../storage/repos/files.js";
import { ApiError } from "../errors.js";
import { checkFileContent } from "./content-check.js";
import { JsonlCheck, type JsonlProblem } from "./jsonl-check.js";
import { toFileObject, type FileObject, type ListFilesQuery, type UploadPurpose } from "./schema.js";

const BATCH_DEFAULT_EXPIRY_SECONDS = 30 * 24 * 3600;

export interface FilesDeps {
  readonly db: Db;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly maxUploadBytes: number;
  readonly uploadLeaseMs: number;
}

/** Bytes received under a lease, not yet a file. */
export interface ReceivedUpload {
  readonly uploadId: string;
  readonly fileId: string;
  readonly blobKey: string;
  readonly filename: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly tooLarge: boolean;
  /** undefined when the lines were not checked (the purpose was known not to need it). */
  readonly jsonl: { readonly problem: JsonlProblem | undefined; readonly lines: number } | undefined;
  readonly stopLease: () => void;
}

export interface CommitOptions {
  readonly projectId: string;
  readonly purpose: UploadPurpose;
  readonly expiresAfterSeconds: number | undefined;
}

export class FilesService {
  constructor(private readonly deps: FilesDeps) {}

  /**
   * Streams `body` to the blob store. The pending upload row and its lease exist before the
   * first byte lands, so a server killed mid-stream leaves something the sweeper can find.
   */
  async receive(body: Readable, rawFilename: string, opts: { checkLines: boolean; truncated: () => boolean }): Promise<ReceivedUpload> {
    const { db, blobs, uploadLeaseMs } = this.deps;
    const uploadId = newId.upload();
    const fileId = newId.file();
    const blobKey = `files/${fileId}`;
    await repo.beginUpload(db, uploadId, blobKey, Date.now() + uploadLeaseMs, nowSeconds());
    const timer = setInterval(() => {
      repo.renewUpload(db, uploadId, Date.now() + uploadLeaseMs).catch((err: unknown) => {
        this.deps.log.warn({ err, uploadId }, "could not renew upload lease");
      });
    }, Math.max(250, Math.floor(uploadLeaseMs / 3)));
    timer.unref();
    const stopLease = () => clearInterval(timer);
    const check = opts.checkLines ? new JsonlCheck() : undefined;
    // pipeline, not pipe: a body that errors or closes early fails the check stream too.
    if (check) pipeline(body, check, () => {});
    try {
      const written = await blobs.put(blobKey, check ?? body);
      return {
        uploadId,
        fileId,
        blobKey,
        filename: path.basename(rawFilename.replaceAll("\\", "/")) || "upload",
        bytes: written.bytes,
        sha256: written.sha256,
        tooLarge: opts.truncated(),
        jsonl: check ? { problem: check.problem, lines: check.lines } : undefined,
        stopLease,
      };
    } catch (err) {
      stopLease();
      await this.discard(uploadId, blobKey);
      throw err;
    }
  }

  /** Turns a received upload into a file, or throws a 400 after discarding it. */
  async commit(up: ReceivedUpload, opts: CommitOptions): Promise<FileObject> {
    try {
      checkFileContent(up, opts.purpose, this.deps.maxUploadBytes, "file");
      const createdAt = nowSeconds();
      const expiresAfter =
        opts.expiresAfterSeconds ?? (opts.purpose === "batch" ? BATCH_DEFAULT_EXPIRY_SECONDS : undefined);
      const row = await repo.commitUpload(this.deps.db, up.uploadId, {
        id: up.fileId,
        projectId: opts.projectId,
        filename: up.filename,
        purpose: opts.purpose,
        bytes: up.bytes,
        sha256: up.sha256,
        blobKey: up.blobKey,
        createdAt,
        expiresAt: expiresAfter === undefined ? null : createdAt + expiresAfter,
      });
      up.stopLease();
      return toFileObject(row);
    } catch (err) {
      await this.abandon(up);
      throw err;
    }
  }

  async abandon(up: ReceivedUpload): Promise<void> {
    up.stopLease();
    await this.discard(up.uploadId, up.blobKey);
  }

  /** Removes a partial or rejected upload: the blob first, then the row that points at it. */
  private async discard(uploadId: string, blobKey: string): Promise<void> {
    try {
      await this.deps.blobs.discard(blobKey);
      await repo.endUpload(this.deps.db, uploadId);
    } catch (err) {
      // The lease will lapse and the sweeper will finish the job.
      this.deps.log.warn({ err, uploadId }, "could not discard upload; the sweeper will");
    }
  }

  async list(projectId: string, q: ListFilesQuery) {
    const { db } = this.deps;
    const now = nowSeconds();
    let afterSeq: number | undefined;
    if (q.after !== undefined) {
      afterSeq = await repo.getFileSeq(db, projectId, q.after);
      if (afterSeq === undefined) throw ApiError.notFound(`No such File object: ${q.after}`, "after");
    }
    const rows = await repo.listFiles(db, projectId, { purpose: q.purpose, limit: q.limit, order: q.order, afterSeq }, now);
    const page = rows.slice(0, q.limit).map(toFileObject);
    return {
      object: "list" as const,
      data: page,
      first_id: page[0]?.id ?? null,
      last_id: page.at(-1)?.id ?? null,
      has_more: rows.length > q.limit,
    };
  }

  async retrieve(projectId: string, id: string): Promise<FileObject> {
    const row = await repo.getFile(this.deps.db, projectId, id, nowSeconds());
    if (!row) throw ApiError.noSuchFile(id);
    return toFileObject(row);
  }

  async delete(projectId: string, id: string) {
    const row = await repo.deleteFile(this.deps.db, projectId, id, nowSeconds());
    if (!row) throw ApiError.noSuchFile(id);
    // The row is gone, so the file is gone; a blob left by a crash here is unreachable.
    await this.deps.blobs.delete(row.blobKey).catch((err: unknown) => {
      this.deps.log.warn({ err, fileId: id }, "could not delete blob of deleted file");
    });
    return { id, object: "file" as const, deleted: true as const };
  }

  async content(projectId: string, id: string): Promise<{ file: FileObject; body: Readable }> {
    const row = await repo.getFile(this.deps.db, projectId, id, nowSeconds());
    if (!row) throw ApiError.noSuchFile(id);
    return { file: toFileObject(row), body: await this.deps.blobs.get(row.blobKey) };
  }
}
