// Wire shapes of the Uploads API (OpenAI's names, snake_case) and their serializers.
import { z } from "zod";
import type { FileRow } from "../../storage/repos/files.js";
import type { PartRow, UploadRow } from "../../storage/repos/uploads.js";
import { expiresAfterSeconds, toFileObject, UPLOAD_PURPOSES, type FileObject } from "../files/schema.js";

export const createUploadBody = z
  .object({
    filename: z.string().min(1).max(512),
    purpose: z.enum(UPLOAD_PURPOSES),
    bytes: z.number().int().min(1),
    mime_type: z.string().min(1).max(255),
    expires_after: z.object({ anchor: z.literal("created_at"), seconds: expiresAfterSeconds }).strict().nullish(),
  })
  .strict();
export type CreateUploadBody = z.infer<typeof createUploadBody>;

export const completeUploadBody = z
  .object({
    part_ids: z.array(z.string().min(1)).min(1),
    md5: z
      .string()
      .regex(/^[0-9a-fA-F]{32}$/, "md5 must be 32 hexadecimal digits")
      .nullish(),
  })
  .strict();
export type CompleteUploadBody = z.infer<typeof completeUploadBody>;

export const uploadIdParams = z.object({ upload_id: z.string().min(1) });

export interface UploadObject {
  id: string;
  object: "upload";
  bytes: number;
  created_at: number;
  expires_at: number;
  filename: string;
  purpose: string;
  status: "pending" | "completed" | "cancelled" | "expired";
  file: FileObject | null;
}

/** `completing` is ours alone: on the wire the upload is still pending until the File exists. */
export function wireStatus(row: UploadRow, nowSec: number): UploadObject["status"] {
  if (row.status === "completed" || row.status === "cancelled" || row.status === "expired") return row.status;
  return row.expiresAt <= nowSec ? "expired" : "pending";
}

export function toUploadObject(row: UploadRow, file: FileRow | undefined, nowSec: number): UploadObject {
  return {
    id: row.id,
    object: "upload",
    bytes: row.bytes,
    created_at: row.createdAt,
    expires_at: row.expiresAt,
    filename: row.filename,
    purpose: row.purpose,
    status: wireStatus(row, nowSec),
    file: file ? toFileObject(file) : null,
  };
}

export function toPartObject(row: PartRow) {
  return { id: row.id, object: "upload.part" as const, created_at: row.createdAt, upload_id: row.uploadId };
}
