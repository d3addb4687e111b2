// Reads tensors out of Hugging Face safetensors files: the 8-byte header length, the header JSON,
// then each tensor's byte range, converted to fp32. Handles one model.safetensors or the shards
// listed by model.safetensors.index.json.
import { open, readFile, stat } from "node:fs/promises";
import path from "node:path";

export interface TensorInfo {
  dtype: string;
  shape: number[];
  file: string;
  /** Absolute byte offset of the data in file. */
  offset: number;
  length: number;
}

export interface WeightFiles {
  tensors: Map<string, TensorInfo>;
  /** The weight files, for the conversion cache key. */
  files: string[];
}

async function readHeader(file: string, into: Map<string, TensorInfo>): Promise<void> {
  const fh = await open(file, "r");
  try {
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    const { size } = await fh.stat();
    if (len <= 0 || len + 8 > size) throw new Error(`${file} is not a safetensors file (header length ${len})`);
    const header = Buffer.alloc(len);
    await fh.read(header, 0, len, 8);
    const json = JSON.parse(header.toString("utf8")) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
    for (const [name, t] of Object.entries(json)) {
      if (name === "__metadata__") continue;
      const [begin, end] = t.data_offsets;
      into.set(name, { dtype: t.dtype, shape: t.shape, file, offset: 8 + len + begin, length: end - begin });
    }
  } catch (err) {
    throw new Error(`cannot read safetensors header of ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fh.close();
  }
}

/** Lists the tensors of a model (or adapter) folder; `single` names the single-file form. */
export async function openWeights(dir: string, single = "model.safetensors"): Promise<WeightFiles> {
  const tensors = new Map<string, TensorInfo>();
  const singlePath = path.join(dir, single);
  const exists = await stat(singlePath).then(() => true, () => false);
  if (exists) {
    await readHeader(singlePath, tensors);
    return { tensors, files: [singlePath] };
  }
  const indexPath = path.join(dir, single + ".index.json");
  let index: { weight_map: Record<string, string> };
  try {
    index = JSON.parse(await readFile(indexPath, "utf8")) as typeof index;
  } catch {
    throw new Error(`no ${single} or ${single}.index.json in ${dir}`);
  }
  const files = [...new Set(Object.values(index.weight_map))].map((f) => path.join(dir, f));
  for (const f of files) await readHeader(f, tensors);
  return { tensors, files };
}

function bf16ToF32(src: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const u32 = new Uint32Array(out.buffer);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0; i < n; i++) u32[i] = dv.getUint16(i * 2, true) << 16;
  return out;
}

function f16ToF32(src: Uint8Array, n: number): Float32Array {
  const out = new Float32Array(n);
  const dv = new DataView(src.buffer, src.byteOffset, src.byteLength);
  for (let i = 0; i < n; i++) {
    const h = dv.getUint16(i * 2, true);
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) out[i] = sign * frac * 2 ** -24;
    else if (exp === 31) out[i] = frac ? NaN : sign * Infinity;
    else out[i] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
}

/** The tensor's values as fp32 (a fresh array). */
export async function readTensor(info: TensorInfo): Promise<Float32Array> {
  const n = info.shape.reduce((a, b) => a * b, 1);
  const raw = new Uint8Array(info.length);
  const fh = await open(info.file, "r");
  try {
    let done = 0;
    while (done < info.length) {
      const { bytesRead } = await fh.read(raw, done, info.length - done, info.offset + done);
      if (bytesRead === 0) throw new Error(`${info.file}: truncated tensor data`);
      done += bytesRead;
    }
  } finally {
    await fh.close();
  }
  switch (info.dtype) {
    case "F32":
      return new Float32Array(raw.buffer, 0, n);
    case "BF16":
      return bf16ToF32(raw, n);
    case "F16":
      return f16ToF32(raw, n);
    default:
      throw new Error(`unsupported safetensors dtype ${info.dtype}`);
  }
}
