// The ft: model-name scheme: ft:BASE:PROJECT:SUFFIX:ID and, for checkpoints,
// ft:BASE:PROJECT:SUFFIX:ID:ckpt-step-N with an id of their own (as OpenAI does).
import { randomAlnum } from "../ids.js";

export const FT_NAME = /^ft:([^:]+):([^:]*):([^:]*):([A-Za-z0-9]+)(?::ckpt-step-(\d+))?$/;

export function projectSlug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9_-]+/g, "-").replace(/^-+|-+$/g, "") || "project";
}

export function fineTunedModelName(base: string, project: string, suffix: string | null): string {
  return `ft:${base}:${projectSlug(project)}:${suffix ?? ""}:${randomAlnum(8)}`;
}

export function checkpointModelName(base: string, project: string, suffix: string | null, step: number): string {
  return `ft:${base}:${projectSlug(project)}:${suffix ?? ""}:${randomAlnum(8)}:ckpt-step-${step}`;
}

export interface ParsedFtName {
  readonly base: string;
  readonly project: string;
  readonly suffix: string;
  readonly id: string;
  readonly step: number | undefined;
}

export function parseFtName(name: string): ParsedFtName | undefined {
  const m = FT_NAME.exec(name);
  if (!m) return undefined;
  return { base: m[1]!, project: m[2]!, suffix: m[3]!, id: m[4]!, step: m[5] === undefined ? undefined : Number(m[5]) };
}
