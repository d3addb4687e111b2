// Base models: Hugging Face folders in the models dir; a folder's name is its model id. Only a
// complete folder (config, weights, tokenizer) is a model: anything less would be listed, then
// fail in the engine or the trainer with an error that names the server's own paths.
import type { Stats } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** What a folder needs, each as any one of these files (weights: one file or a sharded index). */
const REQUIRED: ReadonlyArray<{ what: string; files: readonly string[] }> = [
  { what: "config.json", files: ["config.json"] },
  { what: "weights (model.safetensors)", files: ["model.safetensors", "model.safetensors.index.json"] },
  { what: "tokenizer.json", files: ["tokenizer.json"] },
];

export interface BaseModel {
  readonly id: string;
  readonly dir: string;
  readonly created: number;
}

async function isFile(file: string): Promise<Stats | undefined> {
  try {
    const st = await fs.stat(file);
    return st.isFile() ? st : undefined;
  } catch {
    return undefined;
  }
}

export class BaseModels {
  constructor(readonly dir: string) {}

  private folder(id: string): string | undefined {
    return SAFE_NAME.test(id) && !id.includes("..") ? path.join(this.dir, id) : undefined;
  }

  /** What folder `id` lacks to be a model; undefined when there is no such folder. */
  async missing(id: string): Promise<string[] | undefined> {
    const dir = this.folder(id);
    if (!dir || !(await fs.stat(dir).then((s) => s.isDirectory(), () => false))) return undefined;
    const found = await Promise.all(REQUIRED.map(async (r) => (await Promise.all(r.files.map((f) => isFile(path.join(dir, f))))).some(Boolean)));
    return REQUIRED.filter((_, i) => !found[i]).map((r) => r.what);
  }

  /** The folder of base model `id`, if it is a complete model folder. */
  async get(id: string): Promise<BaseModel | undefined> {
    const dir = this.folder(id);
    if (!dir || (await this.missing(id))?.length !== 0) return undefined;
    const st = await isFile(path.join(dir, "config.json"));
    return st && { id, dir, created: Math.floor(st.mtimeMs / 1000) };
  }

  /** Why `id` is not a model, in words for an API error (no server path), when it is a folder
   *  here that is not a complete model; undefined otherwise. */
  async incomplete(id: string): Promise<string | undefined> {
    const missing = await this.missing(id);
    if (!missing?.length) return undefined;
    return `The folder '${id}' on this server is not a complete model (missing: ${missing.join(", ")}).`;
  }

  private async names(): Promise<string[]> {
    try {
      return (await fs.readdir(this.dir)).filter((n) => SAFE_NAME.test(n)).sort();
    } catch {
      return [];
    }
  }

  async list(): Promise<BaseModel[]> {
    const found = await Promise.all((await this.names()).map((n) => this.get(n)));
    return found.filter((m): m is BaseModel => m !== undefined);
  }

  /** The folders that are not complete models, with what each lacks (logged once at start). */
  async broken(): Promise<Array<{ id: string; missing: string[] }>> {
    const all = await Promise.all((await this.names()).map(async (id) => ({ id, missing: (await this.missing(id)) ?? [] })));
    return all.filter((m) => m.missing.length > 0);
  }
}
