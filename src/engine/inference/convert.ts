// Converts a Hugging Face model folder into model.onnx + model.data once, into a cache folder
// keyed by what the result depends on. The folder is built under a temporary name and renamed into
// place, so a reader never sees a half-written model and two converters racing both end up with
// one complete copy.
import { createHash, randomBytes } from "node:crypto";
import { mkdir, open, rename, rm, stat, writeFile, type FileHandle } from "node:fs/promises";
import path from "node:path";
import { GraphBuilder, type DataSink, type WeightMode } from "./graph-builder.js";
import { readModelConfig, type ModelConfig } from "./model-config.js";
import { encodeModel } from "./onnx-proto.js";
import { openWeights } from "./safetensors.js";

/** Bump whenever the graph or the weight layout changes: it invalidates every cached conversion. */
export const BUILDER_VERSION = 7;
const ALIGN = 64 * 1024;
const CHUNK = 64 * 1024 * 1024;

export interface ConvertedModel {
  onnxPath: string;
  config: ModelConfig;
}

class FileSink implements DataSink {
  readonly location = "model.data";
  private offset = 0;
  constructor(private readonly fh: FileHandle) {}

  async append(bytes: Uint8Array): Promise<{ offset: number; length: number }> {
    const start = Math.ceil(this.offset / ALIGN) * ALIGN;
    // Node refuses single writes over 2 GiB; chunking also keeps peak memory flat.
    for (let done = 0; done < bytes.length; done += CHUNK) {
      const part = bytes.subarray(done, Math.min(done + CHUNK, bytes.length));
      await this.fh.write(part, 0, part.length, start + done);
    }
    this.offset = start + bytes.length;
    return { offset: start, length: bytes.length };
  }
}

async function cacheKey(rawConfig: string, files: string[], mode: WeightMode): Promise<string> {
  const h = createHash("sha256").update(rawConfig).update(`\0${mode}\0${BUILDER_VERSION}`);
  for (const f of files) {
    const s = await stat(f);
    h.update(`\0${path.basename(f)}\0${s.size}\0${s.mtimeMs}`);
  }
  return h.digest("hex").slice(0, 32);
}

export async function convertModel(modelDir: string, cacheDir: string, mode: WeightMode, onLayer?: (done: number, total: number) => void): Promise<ConvertedModel> {
  const { config, raw } = await readModelConfig(modelDir);
  const weights = await openWeights(modelDir);
  const key = await cacheKey(raw, weights.files, mode);
  const finalDir = path.join(cacheDir, key);
  const onnxPath = path.join(finalDir, "model.onnx");
  if (await stat(onnxPath).then(() => true, () => false)) return { onnxPath, config };

  await mkdir(cacheDir, { recursive: true });
  const tmpDir = path.join(cacheDir, `.${key}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`);
  await mkdir(tmpDir);
  try {
    const fh = await open(path.join(tmpDir, "model.data"), "w");
    const builder = new GraphBuilder(config, weights.tensors, mode, new FileSink(fh), onLayer);
    try {
      await builder.build();
    } finally {
      await fh.close();
    }
    const proto = encodeModel({
      nodes: builder.nodes, inputs: builder.inputs, outputs: builder.outputs, initializers: builder.initializers,
      opsets: [{ domain: "", version: 17 }, { domain: "com.microsoft", version: 1 }],
    });
    await writeFile(path.join(tmpDir, "model.onnx"), proto);
    try {
      await rename(tmpDir, finalDir);
    } catch (err) {
      // Another process finished the same conversion first: keep theirs.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== "ENOTEMPTY" && code !== "EEXIST") throw err;
      await rm(tmpDir, { recursive: true, force: true });
    }
  } catch (err) {
    await rm(tmpDir, { recursive: true, force: true });
    throw err;
  }
  return { onnxPath, config };
}
