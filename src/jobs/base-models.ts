// Base models: Hugging Face folders in the models dir; a folder's name is its model id.
import fs from "node:fs/promises";
import path from "node:path";

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export interface BaseModel {
  readonly id: string;
  readonly dir: string;
  readonly created: number;
}

export class BaseModels {
  constructor(readonly dir: string) {}

  /** The folder of base model `id`, if it is a model folder (has a config.json). */
  async get(id: string): Promise<BaseModel | undefined> {
    if (!SAFE_NAME.test(id) || id.includes("..")) return undefined;
    const dir = path.join(this.dir, id);
    try {
      const st = await fs.stat(path.join(dir, "config.json"));
      return { id, dir, created: Math.floor(st.mtimeMs / 1000) };
    } catch {
      return undefined;
    }
  }

  async list(): Promise<BaseModel[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.dir);
    } catch {
      return [];
    }
    const found = await Promise.all(names.sort().map((n) => this.get(n)));
    return found.filter((m): m is BaseModel => m !== undefined);
  }
}
