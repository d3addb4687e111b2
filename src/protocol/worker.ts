// The worker protocol (/internal/v1), defined once: every request body and every answer, as zod
// schemas and the types inferred from them. The API's routes (src/api/internal) parse requests
// with these; the engine's client (src/engine/worker/protocol-client.ts) builds its requests from
// the same types and parses the answers with the same schemas. Pure zod: both sides may import it.
import { z } from "zod";

export const registerBody = z.object({ name: z.string().min(1).max(200).optional() }).strict().optional();

export const claimBody = z
  .object({ wait_seconds: z.number().min(0).max(60).default(20) })
  .strict()
  .default({ wait_seconds: 20 });

const eventItem = z
  .object({
    level: z.enum(["info", "warn", "error"]).default("info"),
    message: z.string().min(1).max(10_000),
    type: z.enum(["message", "metrics"]).default("message"),
    data: z.record(z.string(), z.unknown()).nullish(),
  })
  .strict();

export const progress = z.object({
  step: z.number().int().min(0),
  total_steps: z.number().int().min(1),
  steps_per_second: z.number().min(0),
});

export const eventsBody = z.object({ events: z.array(eventItem).max(1000), progress: progress.optional() }).strict();

export const heartbeatBody = z.object({ progress: progress.optional() }).strict().optional();

const fileName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/).max(200);

export const checkpointBody = z
  .object({
    step: z.number().int().min(0),
    epoch: z.number().int().min(0),
    metrics: z.record(z.string(), z.number()),
    files: z.array(fileName).min(1).max(100),
  })
  .strict();

export const completeBody = z
  .object({ trained_tokens: z.number().int().min(0), files: z.array(fileName).min(1).max(100) })
  .strict();

export const failBody = z
  .object({
    code: z.string().min(1).max(100),
    message: z.string().min(1).max(20_000),
    // the failure may pass (a training process was killed): the job goes back to the queue and
    // resumes from its latest checkpoint while attempts are left
    retryable: z.boolean().optional(),
  })
  .strict();

export const jobParams = z.object({ job_id: z.string().min(1) });
export const blobParams = z.object({ job_id: z.string().min(1), kind: z.enum(["checkpoint", "final"]), step: z.string().regex(/^\d+$/), file: fileName });
export const inputParams = z.object({ job_id: z.string().min(1), input: z.enum(["training_file", "validation_file"]) });
export const sourceParams = z.object({ job_id: z.string().min(1), source: z.enum(["resume", "parent"]), file: fileName });

// ---- Answers ---------------------------------------------------------------------------------

export const registerResponse = z.object({ worker_id: z.string(), name: z.string(), lease_seconds: z.number(), heartbeat_seconds: z.number() });

export const jobSpec = z.object({
  job: z.object({
    id: z.string(),
    attempt: z.number().int(),
    base_model: z.string(),
    parent_model: z.string().nullable(),
    training_file: z.string(),
    validation_file: z.string().nullable(),
    /** absent from an older API: supervised */
    method: z.enum(["supervised", "dpo"]).optional(),
    hyperparameters: z.record(z.string(), z.union([z.number(), z.string()])),
    /** wandb integrations, each with the run id to log to; absent from an older API */
    integrations: z.array(z.object({ type: z.literal("wandb"), wandb: z.record(z.string(), z.unknown()) })).optional(),
    seed: z.number().int(),
    suffix: z.string().nullable(),
    n_examples: z.number().int().nullable(),
    epoch_tokens: z.number().int().nullable(),
  }),
  resume: z.object({ checkpoint_id: z.string(), step: z.number().int(), epoch: z.number().int(), files: z.array(z.string()) }).nullable(),
  parent: z.object({ model: z.string(), files: z.array(z.string()) }).nullable(),
  lease: z.object({ expires_at_ms: z.number(), lease_seconds: z.number(), heartbeat_seconds: z.number() }),
});

export const action = z.enum(["continue", "cancel", "pause", "lost"]);
export const heartbeatResponse = z.object({ action, lease_expires_at_ms: z.number().nullable() });
export const eventsResponse = z.object({ recorded: z.number().int() });
export const artifactResponse = z.object({ key: z.string(), bytes: z.number().int(), sha256: z.string() });
export const checkpointResponse = z.object({ step: z.number().int() });
/** complete and fail answer the job object (src/api/fine-tuning); the worker reads these fields. */
export const jobResponse = z.object({ id: z.string(), status: z.string(), fine_tuned_model: z.string().nullable() }).passthrough();
export const releaseResponse = z.object({ released: z.boolean() });

export type JobSpec = z.infer<typeof jobSpec>;
export type Progress = z.infer<typeof progress>;
export type WorkerEvent = z.input<typeof eventItem>;
export type Action = z.infer<typeof action>;
export type CheckpointReport = z.infer<typeof checkpointBody>;
export type CompleteReport = z.infer<typeof completeBody>;
export type FailReport = z.infer<typeof failBody>;
