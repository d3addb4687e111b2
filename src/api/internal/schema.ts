// Wire shapes of the worker protocol (/internal/v1): how engine workers claim jobs and report.
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
  .object({ code: z.string().min(1).max(100), message: z.string().min(1).max(20_000) })
  .strict();

export const jobParams = z.object({ job_id: z.string().min(1) });
export const blobParams = z.object({ job_id: z.string().min(1), kind: z.enum(["checkpoint", "final"]), step: z.string().regex(/^\d+$/), file: fileName });
export const inputParams = z.object({ job_id: z.string().min(1), input: z.enum(["training_file", "validation_file"]) });
export const sourceParams = z.object({ job_id: z.string().min(1), source: z.enum(["resume", "parent"]), file: fileName });
