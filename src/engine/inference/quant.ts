// Symmetric 4-bit block quantization in com.microsoft.MatMulNBits layout (onnx-serving-notes §2):
// the weight stays [out,in] (HF Linear), packed along `in` in blocks of 32, low nibble first,
// with one fp32 scale per block and the default zero point 8.

export const BLOCK = 32;

export interface Quantized {
  packed: Uint8Array; // (N, kBlocks, BLOCK/2)
  scales: Float32Array; // N * kBlocks
  kBlocks: number;
}

/** w is [n, k] row-major. Each block maps its largest-magnitude value to -8 (q4_0 style). */
export function quantizeInt4(w: Float32Array, n: number, k: number): Quantized {
  const kBlocks = Math.ceil(k / BLOCK);
  const packed = new Uint8Array(n * kBlocks * (BLOCK / 2));
  const scales = new Float32Array(n * kBlocks);
  for (let row = 0; row < n; row++) {
    const base = row * k;
    for (let b = 0; b < kBlocks; b++) {
      const start = b * BLOCK;
      const end = Math.min(start + BLOCK, k);
      let max = 0;
      for (let i = start; i < end; i++) {
        const v = w[base + i]!;
        if (Math.abs(v) > Math.abs(max)) max = v;
      }
      const scale = max / -8;
      const inv = scale === 0 ? 0 : 1 / scale;
      scales[row * kBlocks + b] = scale;
      const out = (row * kBlocks + b) * (BLOCK / 2);
      for (let i = 0; i < BLOCK; i += 2) {
        const q0 = start + i < end ? Math.min(15, Math.max(0, Math.round(w[base + start + i]! * inv) + 8)) : 8;
        const q1 = start + i + 1 < end ? Math.min(15, Math.max(0, Math.round(w[base + start + i + 1]! * inv) + 8)) : 8;
        packed[out + i / 2] = q0 | (q1 << 4);
      }
    }
  }
  return { packed, scales, kBlocks };
}

/** [rows, cols] -> [cols, rows]. */
export function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < cols; c++) out[c * rows + r] = w[base + c]!;
  }
  return out;
}
