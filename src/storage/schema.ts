// Drizzle schema: the one description of our tables. `npm run db:generate` turns a change here
// into a reviewed SQL file under migrations/, applied at start-up.
import { bigint, bigserial, index, integer, jsonb, pgTable, text, uniqueIndex } from "drizzle-orm/pg-core";

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

// Admin keys belong to no project: they manage checkpoint permissions and nothing else.
export const adminKeys = pgTable("admin_keys", {
  id: text("id").primaryKey(),
  keyHash: text("key_hash").notNull().unique(),
  hint: text("hint").notNull(),
  createdAt: unixSeconds("created_at").notNull(),
});

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

// The Uploads API: a file sent in parts. status: pending → completing → completed, or
// cancelled / expired. `completing` is held under a lease (complete_lease_expires_at, ms) by
// the server streaming the parts into files/<file_id>; the File row and `completed` are
// written in one transaction, and a lapsed lease is undone by the sweeper (the partial file blob
// discarded, then back to pending; the lease value is the attempt's token), so a crash mid-complete leaves the File or nothing.
export const uploads = pgTable(
  "uploads",
  {
    id: text("id").primaryKey(),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id),
    filename: text("filename").notNull(),
    purpose: text("purpose").notNull(),
    bytes: bigint("bytes", { mode: "number" }).notNull(),
    mimeType: text("mime_type").notNull(),
    // expires_after.seconds for the File this upload becomes.
    fileExpiresAfter: integer("file_expires_after"),
    status: text("status").notNull(),
    createdAt: unixSeconds("created_at").notNull(),
    expiresAt: unixSeconds("expires_at").notNull(),
    // Chosen by the first complete and kept, so a retried complete overwrites the same blob.
    fileId: text("file_id"),
    completeLeaseExpiresAt: bigint("complete_lease_expires_at", { mode: "number" }),
  },
  (t) => [index("uploads_status_expires_idx").on(t.status, t.expiresAt)],
);

// One part of an upload, its own blob. bytes is null while the part is still streaming in.
export const uploadParts = pgTable(
  "upload_parts",
  {
    id: text("id").primaryKey(),
    uploadId: text("upload_id")
      .notNull()
      .references(() => uploads.id),
    blobKey: text("blob_key").notNull(),
    bytes: bigint("bytes", { mode: "number" }),
    createdAt: unixSeconds("created_at").notNull(),
  },
  (t) => [index("upload_parts_upload_idx").on(t.uploadId)],
);

// ---- Fine-tuning jobs -------------------------------------------------------------------------

export const fineTuningJobs = pgTable(
  "fine_tuning_jobs",
  {
    id: text("id").primaryKey(),
    seq: bigserial("seq", { mode: "number" }).notNull().unique(),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id),
    createdAt: unixSeconds("created_at").notNull(),
    // What the caller asked for (a base model id, or an ft: model / checkpoint to continue from).
    model: text("model").notNull(),
    // The base model folder the job trains on, resolved from `model`.
    baseModel: text("base_model").notNull(),
    // The ft: model or checkpoint whose adapter the job starts from, when continuing.
    parentModel: text("parent_model"),
    trainingFile: text("training_file").notNull(),
    validationFile: text("validation_file"),
    status: text("status").notNull(),
    // method.type plus the hyperparameters as requested ("auto" or numbers), then resolved.
    method: jsonb("method").notNull(),
    suffix: text("suffix"),
    seed: integer("seed").notNull(),
    metadata: jsonb("metadata"),
    integrations: jsonb("integrations"),
    error: jsonb("error"),
    fineTunedModel: text("fine_tuned_model"),
    finishedAt: unixSeconds("finished_at"),
    trainedTokens: bigint("trained_tokens", { mode: "number" }),
    estimatedFinish: unixSeconds("estimated_finish"),
    resultFiles: jsonb("result_files").notNull(),
    // Validation results the trainer needs (example count, tokens per epoch).
    nExamples: integer("n_examples"),
    epochTokens: bigint("epoch_tokens", { mode: "number" }),
    // The queue. fair_rank orders claims across projects (see src/jobs/queue.ts).
    fairRank: integer("fair_rank").notNull().default(0),
    attempts: integer("attempts").notNull().default(0),
    maxAttempts: integer("max_attempts").notNull().default(3),
    leaseOwner: text("lease_owner"),
    leaseExpiresAt: bigint("lease_expires_at", { mode: "number" }),
    // A retried create (no Idempotency-Key from the SDKs) finds the job its first try made.
    createFingerprint: text("create_fingerprint"),
  },
  (t) => [
    index("ft_jobs_project_seq_idx").on(t.projectId, t.seq),
    index("ft_jobs_claim_idx").on(t.status, t.fairRank, t.seq),
    index("ft_jobs_lease_idx").on(t.status, t.leaseExpiresAt),
    index("ft_jobs_fingerprint_idx").on(t.projectId, t.createFingerprint),
  ],
);

export const jobEvents = pgTable(
  "job_events",
  {
    id: text("id").primaryKey(),
    seq: bigserial("seq", { mode: "number" }).notNull().unique(),
    jobId: text("job_id")
      .notNull()
      .references(() => fineTuningJobs.id),
    createdAt: unixSeconds("created_at").notNull(),
    level: text("level").notNull(),
    message: text("message").notNull(),
    type: text("type").notNull(),
    data: jsonb("data"),
  },
  (t) => [index("job_events_job_seq_idx").on(t.jobId, t.seq)],
);

export const jobCheckpoints = pgTable(
  "job_checkpoints",
  {
    id: text("id").primaryKey(),
    jobId: text("job_id")
      .notNull()
      .references(() => fineTuningJobs.id),
    createdAt: unixSeconds("created_at").notNull(),
    stepNumber: integer("step_number").notNull(),
    epoch: integer("epoch").notNull(),
    metrics: jsonb("metrics").notNull(),
    modelName: text("model_name").notNull(),
    // Blob prefix holding the adapter and the resume state, and the file names under it.
    blobPrefix: text("blob_prefix").notNull(),
    files: jsonb("files").notNull(),
    // Older checkpoints are pruned (only the last three are kept, as OpenAI does).
    deletedAt: unixSeconds("deleted_at"),
  },
  (t) => [uniqueIndex("job_checkpoints_job_step_idx").on(t.jobId, t.stepNumber)],
);

// Fine-tuned models and checkpoint models, by their ft: names.
export const models = pgTable(
  "models",
  {
    id: text("id").primaryKey(),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id),
    jobId: text("job_id")
      .notNull()
      .references(() => fineTuningJobs.id),
    kind: text("kind").notNull(),
    baseModel: text("base_model").notNull(),
    // The adapter (PEFT format) lives under blob_prefix: these file names.
    blobPrefix: text("blob_prefix").notNull(),
    files: jsonb("files").notNull(),
    createdAt: unixSeconds("created_at").notNull(),
    deletedAt: unixSeconds("deleted_at"),
  },
  (t) => [index("models_project_idx").on(t.projectId)],
);

// A project allowed to train from and chat with another project's checkpoint (or model).
export const checkpointPermissions = pgTable(
  "checkpoint_permissions",
  {
    id: text("id").primaryKey(),
    seq: bigserial("seq", { mode: "number" }).notNull().unique(),
    modelId: text("model_id")
      .notNull()
      .references(() => models.id),
    projectId: text("project_id")
      .notNull()
      .references(() => projects.id),
    createdAt: unixSeconds("created_at").notNull(),
  },
  (t) => [uniqueIndex("checkpoint_permissions_model_project_idx").on(t.modelId, t.projectId)],
);

export const workers = pgTable("workers", {
  id: text("id").primaryKey(),
  name: text("name").notNull(),
  tokenHash: text("token_hash").notNull().unique(),
  createdAt: unixSeconds("created_at").notNull(),
  lastSeenAt: unixSeconds("last_seen_at"),
});
