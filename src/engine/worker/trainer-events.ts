// The trainer's stdout events, read against the one table of them: the trainer package's
// events.json, which the Python writer (openft_trainer/protocol.py) checks every line against
// too. READS names the fields this worker relies on; test/trainer-events.test.ts fails when the
// table and READS drift apart.
import { readFileSync } from "node:fs";
import path from "node:path";
import { z } from "zod";

export type FieldKind = "integer" | "number" | "string" | "object" | "string[]";
export type EventTable = Record<string, Record<string, string>>;

/** The fields the runner reads, by event type (a subset of the table, kinds included). */
export const READS = {
  started: { total_steps: "integer", processes: "integer", sharding: "string" },
  metrics: { step: "integer", total_steps: "integer", train_loss: "number", steps_per_second: "number" },
  checkpoint: { step: "integer", epoch: "integer", dir: "string", files: "string[]", metrics: "object" },
  stopped: { step: "integer" },
  done: { adapter_dir: "string", files: "string[]", trained_tokens: "integer" },
  error: { code: "string", message: "string", rank: "integer" },
} as const satisfies Record<string, Record<string, FieldKind>>;

type Kinds = { integer: number; number: number; string: string; object: Record<string, number>; "string[]": string[] };
type Fields<T extends Record<string, FieldKind>> = { -readonly [K in keyof T]: Kinds[T[K]] };
export type TrainerEvent = {
  [T in keyof typeof READS]: { type: T } & Fields<(typeof READS)[T]> & Record<string, unknown>;
}[keyof typeof READS];

export function loadEventTable(trainerPath: string): EventTable {
  const file = path.join(trainerPath, "openft_trainer", "events.json");
  return (JSON.parse(readFileSync(file, "utf8")) as { events: EventTable }).events;
}

const base: Record<FieldKind, z.ZodTypeAny> = {
  integer: z.number().int().nullable(),
  number: z.number().nullable(), // NaN/Infinity arrive as null
  string: z.string(),
  object: z.record(z.string(), z.unknown()),
  "string[]": z.array(z.string()),
};

/** One strict zod schema per event type, built from the table. */
export function eventSchemas(table: EventTable): Map<string, z.ZodTypeAny> {
  const out = new Map<string, z.ZodTypeAny>();
  for (const [type, fields] of Object.entries(table)) {
    const shape: Record<string, z.ZodTypeAny> = { type: z.literal(type) };
    for (const [name, kind] of Object.entries(fields)) {
      const optional = kind.endsWith("?");
      const schema = base[kind.replace(/\?$/, "") as FieldKind];
      if (!schema) throw new Error(`events.json: ${type}.${name} has an unknown kind ${kind}`);
      shape[name] = optional ? schema.optional() : schema;
    }
    out.set(type, z.object(shape).strict());
  }
  return out;
}

/** A line of the trainer's stdout as an event, or why it is not one. */
export function parseTrainerLine(schemas: Map<string, z.ZodTypeAny>, line: string): { event: TrainerEvent } | { problem: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return { problem: "not JSON" };
  }
  const type = (raw as { type?: unknown } | null)?.type;
  const schema = typeof type === "string" ? schemas.get(type) : undefined;
  if (!schema) return { problem: `unknown event type ${JSON.stringify(type)}` };
  const r = schema.safeParse(raw);
  return r.success ? { event: r.data as TrainerEvent } : { problem: r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ") };
}
