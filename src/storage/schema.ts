// Drizzle schema: the one description of our tables. `npm run db:generate` turns a change here
// into a reviewed SQL file under migrations/, applied at start-up.
import { bigint, bigserial, index, pgTable, text, uniqueIndex } from "drizzle-orm/pg-core";

const unixSeconds = (name: string) => bigint(name, { mode: "number" });

export const projects = pgTable("projects", {
  id: text("id").primaryKey(),
  name: text("name").notNull().unique(),
  createdAt: unixSeconds("created_at").notNull(),
});

export const apiKeys = pgTable(
  "api_keys",
  {
    id: text("id").primaryKey(),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id),
    // sha256 of the secret; the secret itself is shown once and never stored.
    keyHash: text("key_hash").notNull(),
    hint: text("hint").notNull(),
    createdAt: unixSeconds("created_at").notNull(),
  },
  (t) => [uniqueIndex("api_keys_key_hash_idx").on(t.keyHash)],
);

export const files = pgTable(
  "files",
  {
    id: text("id").primaryKey(),
    // Insertion order: the stable sort key for cursor pagination (created_at has ties).
    seq: bigserial("seq", { mode: "number" }).notNull().unique(),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id),
    filename: text("filename").notNull(),
    purpose: text("purpose").notNull(),
    bytes: bigint("bytes", { mode: "number" }).notNull(),
    sha256: text("sha256").notNull(),
    blobKey: text("blob_key").notNull(),
    createdAt: unixSeconds("created_at").notNull(),
    expiresAt: unixSeconds("expires_at"),
  },
  (t) => [index("files_project_seq_idx").on(t.projectId, t.seq), index("files_expires_at_idx").on(t.expiresAt)],
);

// An upload in flight. Its blob is written under blob_key but has no files row yet; the row
// appears, and this one goes, in one transaction. A lapsed lease means the uploading server
// died: the sweeper removes the partial blob and this row.
export const fileUploads = pgTable(
  "file_uploads",
  {
    id: text("id").primaryKey(),
    blobKey: text("blob_key").notNull(),
    leaseExpiresAt: bigint("lease_expires_at", { mode: "number" }).notNull(),
    createdAt: unixSeconds("created_at").notNull(),
  },
  (t) => [index("file_uploads_lease_idx").on(t.leaseExpiresAt)],
);
