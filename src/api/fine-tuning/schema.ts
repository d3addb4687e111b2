// Wire shapes of the fine-tuning jobs API (OpenAI's names) and the job serializers.
import { z } from "zod";
import type { CheckpointRow, EventRow, JobRow } from "../../jobs/repo.js";
import { cursor } from "../files/schema.js";

const auto = z.literal("auto");
const intIn = (lo: number, hi: number) => z.number().int().min(lo).max(hi);

/** OpenAI's three hyperparameters plus our LoRA extensions; each "auto" or a number in range. */
export const hyperparameters = z
  .object({
    n_epochs: z.union([auto, intIn(1, 50)]).nullish(),
    batch_size: z.union([auto, intIn(1, 256)]).nullish(),
    learning_rate_multiplier: z.union([auto, z.number().gt(0).max(10)]).nullish(),
    lora_rank: z.union([auto, intIn(1, 256)]).nullish(),
    lora_alpha: z.union([auto, z.number().gt(0).max(1024)]).nullish(),
    lora_dropout: z.union([auto, z.number().min(0).max(0.5)]).nullish(),
    quantization: z.enum(["none", "nf4"]).nullish(),
  })
  .strict();
export type Hyperparameters = z.infer<typeof hyperparameters>;

/** DPO's: the same keys plus beta, OpenAI's range 0 < beta <= 2, and our rpo_alpha (0 to 10). */
export const dpoHyperparameters = hyperparameters
  .extend({
    beta: z.union([auto, z.number().gt(0).max(2)]).nullish(),
    rpo_alpha: z.union([auto, z.number().min(0).max(10)]).nullish(),
  })
  .strict();
export type DpoHyperparameters = z.infer<typeof dpoHyperparameters>;

/** OpenAI's wandb integration object (the SDKs' `FineTuningJobWandbIntegration`). */
export const wandbIntegration = z
  .object({
    type: z.literal("wandb"),
    wandb: z
      .object({
        project: z.string().min(1).max(128),
        name: z.string().min(1).max(128).nullish(),
        entity: z.string().min(1).max(128).nullish(),
        tags: z.array(z.string().min(1).max(64)).max(20).nullish(),
      })
      .strict(),
  })
  .strict();
export type WandbIntegration = z.infer<typeof wandbIntegration>;

export const createJobBody = z
  .object({
    model: z.string().min(1),
    training_file: z.string().min(1),
    validation_file: z.string().min(1).nullish(),
    hyperparameters: hyperparameters.nullish(),
    method: z
      .object({
        // reinforcement is OpenAI's third method; openft does not train with it (400 naming method.type).
        type: z.enum(["supervised", "dpo"], { error: "Fine-tuning method must be 'supervised' or 'dpo'; 'reinforcement' is not supported" }),
        supervised: z.object({ hyperparameters: hyperparameters.nullish() }).strict().nullish(),
        dpo: z.object({ hyperparameters: dpoHyperparameters.nullish() }).strict().nullish(),
        reinforcement: z.unknown().optional(),
      })
      .nullish(),
    suffix: z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9_-]+$/, "suffix may only contain letters, digits, '-' and '_'")
      .nullish(),
    seed: z.number().int().min(0).max(2_147_483_647).nullish(),
    metadata: z
      .record(z.string().max(64), z.string().max(512))
      .refine((m) => Object.keys(m).length <= 16, "metadata may have at most 16 pairs")
      .nullish(),
    integrations: z.array(wandbIntegration).max(5).nullish(),
  })
  .strict();
export type CreateJobBody = z.infer<typeof createJobBody>;

export const listJobsQuery = z.strictObject({
  after: cursor("ftjob-").optional(),
  limit: z.coerce.number().int().min(1).max(100).default(20),
});

export const listEventsQuery = z.strictObject({
  after: cursor("ftevent-").optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(20),
});

export const listCheckpointsQuery = z.strictObject({
  after: cursor("ftckpt_").optional(),
  limit: z.coerce.number().int().min(1).max(100).default(10),
});

export const jobIdParams = z.object({ fine_tuning_job_id: z.string().min(1) });

type StoredHyperparameters = Record<string, number | string>;
/** The job's `method` column: OpenAI's shape, every hyperparameter present ("auto" until resolved). */
export type StoredMethod =
  | { type: "supervised"; supervised: { hyperparameters: StoredHyperparameters } }
  | { type: "dpo"; dpo: { hyperparameters: StoredHyperparameters } };

export function methodHyperparameters(method: StoredMethod): StoredHyperparameters {
  return method.type === "dpo" ? method.dpo.hyperparameters : method.supervised.hyperparameters;
}

export function orgId(projectId: string): string {
  return `org-${projectId.replace(/^proj_/, "")}`;
}

const NO_ERROR = { code: null, message: null, param: null };

export function toJobObject(row: JobRow) {
  const method = row.method as StoredMethod;
  // The deprecated top-level object keeps OpenAI's three keys for either method, so typed
  // clients (where it is not nullable) read it as before; method.<type> has the rest.
  const hp = methodHyperparameters(method);
  return {
    id: row.id,
    object: "fine_tuning.job" as const,
    created_at: row.createdAt,
    model: row.model,
    training_file: row.trainingFile,
    validation_file: row.validationFile,
    status: row.status,
    error: row.error ?? NO_ERROR,
    fine_tuned_model: row.fineTunedModel,
    finished_at: row.finishedAt,
    hyperparameters: {
      batch_size: hp.batch_size ?? "auto",
      learning_rate_multiplier: hp.learning_rate_multiplier ?? "auto",
      n_epochs: hp.n_epochs ?? "auto",
    },
    organization_id: orgId(row.projectId),
    result_files: row.resultFiles as string[],
    seed: row.seed,
    trained_tokens: row.trainedTokens,
    estimated_finish: row.estimatedFinish,
    integrations: (row.integrations as unknown[] | null) ?? [],
    method,
    metadata: row.metadata as Record<string, string> | null,
    user_provided_suffix: row.suffix,
    usage_metrics: null,
    shared_with_openai: false,
  };
}

export function toEventObject(row: EventRow) {
  return {
    id: row.id,
    object: "fine_tuning.job.event" as const,
    created_at: row.createdAt,
    level: row.level,
    message: row.message,
    type: row.type,
    data: row.data ?? {},
  };
}

export function toCheckpointObject(row: CheckpointRow) {
  return {
    id: row.id,
    object: "fine_tuning.job.checkpoint" as const,
    created_at: row.createdAt,
    fine_tuned_model_checkpoint: row.modelName,
    step_number: row.stepNumber,
    fine_tuning_job_id: row.jobId,
    metrics: row.metrics as Record<string, number>,
  };
}
