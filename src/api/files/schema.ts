// Wire shapes of the Files API (OpenAI's names, snake_case) and their serializers.
import { z } from "zod";
import type { FileRow } from "../../storage/repos/files.js";

export const UPLOAD_PURPOSES = ["assistants", "batch", "fine-tune", "vision", "user_data", "evals"] as const;
export type UploadPurpose = (typeof UPLOAD_PURPOSES)[number];

/** A list cursor: the id of the last object of the previous page, by its kind's prefix. */
export const cursor = (prefix: string) => z.string().regex(new RegExp(`^${prefix}[A-Za-z0-9]+$`), `must be an id starting with '${prefix}'`);

export const listFilesQuery = z.strictObject({
  purpose: z.enum([...UPLOAD_PURPOSES, "fine-tune-results"]).optional(),
  limit: z.coerce.number().int().min(1).max(10000).default(10000),
  order: z.enum(["asc", "desc"]).default("desc"),
  after: cursor("file-").optional(),
});
export type ListFilesQuery = z.infer<typeof listFilesQuery>;

export const fileIdParams = z.object({ file_id: z.string().min(1) });

export const expiresAfterSeconds = z.coerce.number().int().min(3600).max(2_592_000);

export interface FileObject {
  id: string;
  object: "file";
  bytes: number;
  created_at: number;
  expires_at: number | null;
  filename: string;
  purpose: string;
  status: "processed";
  status_details: null;
}

export function toFileObject(row: FileRow): FileObject {
  return {
    id: row.id,
    object: "file",
    bytes: row.bytes,
    created_at: row.createdAt,
    expires_at: row.expiresAt,
    filename: row.filename,
    purpose: row.purpose,
    status: "processed",
    status_details: null,
  };
}
