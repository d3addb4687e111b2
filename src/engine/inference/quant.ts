// 4-bit block quantization in com.microsoft.MatMulNBits layout (the onnxruntime-node CPU build runs
// it): the weight stays [out,in] (HF Linear), packed along `in` in blocks of 32, low nibble first,
// one fp32 scale and one 4-bit zero point per block (w ≈ scale·(q − zero)).
//
// Each block takes the better (smaller squared error) of two grids: symmetric (the
// largest-magnitude value maps to −8, zero point 8, q4_0 style) and asymmetric (min..max over the
// 16 levels, zero point rounded, q4_1 style, then its scale refitted by least squares). Weights
// that come from a Q4_1 GGUF lie on a min..max grid already, so the asymmetric grid nearly
// reproduces them, where the symmetric one cannot (SmolLM2-135M: squared error −40%).

export const BLOCK = 32;

export interface Quantized {
  packed: Uint8Array; // (N, kBlocks, BLOCK/2)
  scales: Float32Array; // N * kBlocks
  zeroPoints: Uint8Array; // N * ceil(kBlocks/2), low nibble first
  kBlocks: number;
}

/** Round half up, the same in the Python test reference (floor(x + 0.5)). */
const round = (x: number) => Math.floor(x + 0.5);
const clampQ = (x: number) => (x < 0 ? 0 : x > 15 ? 15 : x);

/** Quantizes v[0..n) (n <= BLOCK) on the grid (scale, zero): q values into out, returns the squared error. */
function fit(v: Float64Array, n: number, scale: number, zero: number, out: Uint8Array): number {
  const inv = scale === 0 ? 0 : 1 / scale;
  let err = 0;
  for (let i = 0; i < n; i++) {
    const q = clampQ(round(v[i]! * inv) + zero);
    out[i] = q;
    const d = v[i]! - Math.fround(scale) * (q - zero);
    err += d * d;
  }
  return err;
}

/** w is [n, k] row-major. */
export function quantizeInt4(w: Float32Array, n: number, k: number): Quantized {
  const kBlocks = Math.ceil(k / BLOCK);
  const zpStride = Math.ceil(kBlocks / 2);
  const packed = new Uint8Array(n * kBlocks * (BLOCK / 2));
  const scales = new Float32Array(n * kBlocks);
  const zeroPoints = new Uint8Array(n * zpStride);
  const v = new Float64Array(BLOCK);
  const qa = new Uint8Array(BLOCK);
  const qb = new Uint8Array(BLOCK);
  const q = new Uint8Array(BLOCK).fill(8);
  for (let row = 0; row < n; row++) {
    for (let b = 0; b < kBlocks; b++) {
      const start = row * k + b * BLOCK;
      const len = Math.min(BLOCK, k - b * BLOCK);
      let max = 0;
      let lo = Infinity;
      let hi = -Infinity;
      for (let i = 0; i < len; i++) {
        const x = w[start + i]!;
        v[i] = x;
        if (Math.abs(x) > Math.abs(max)) max = x;
        if (x < lo) lo = x;
        if (x > hi) hi = x;
      }
      // symmetric
      let scale = max / -8;
      let zero = 8;
      const err = fit(v, len, scale, zero, qa);
      let best = qa;
      // asymmetric min..max, then the least-squares scale for those levels
      if (hi > lo) {
        const s0 = (hi - lo) / 15;
        const z0 = clampQ(round(-lo / s0));
        let e = fit(v, len, s0, z0, qb);
        let sOpt = s0;
        let num = 0;
        let den = 0;
        for (let i = 0; i < len; i++) {
          num += v[i]! * (qb[i]! - z0);
          den += (qb[i]! - z0) * (qb[i]! - z0);
        }
        if (den > 0 && num / den > 0) {
          const s1 = num / den;
          const e1 = fit(v, len, s1, z0, q);
          if (e1 < e) {
            e = e1;
            sOpt = s1;
            qb.set(q);
          }
        }
        if (e < err) {
          scale = sOpt;
          zero = z0;
          best = qb;
        }
      }
      scales[row * kBlocks + b] = scale;
      zeroPoints[row * zpStride + (b >> 1)]! |= (b & 1) === 0 ? zero : zero << 4;
      const out = (row * kBlocks + b) * (BLOCK / 2);
      for (let i = 0; i < BLOCK; i += 2) {
        const q0 = i < len ? best[i]! : zero;
        const q1 = i + 1 < len ? best[i + 1]! : zero;
        packed[out + i / 2] = q0 | (q1 << 4);
      }
    }
  }
  return { packed, scales, zeroPoints, kBlocks };
}

/** The weights MatMulNBits computes with: [n, k] row-major. */
export function dequantizeInt4(qz: Quantized, n: number, k: number): Float32Array {
  const out = new Float32Array(n * k);
  const zpStride = Math.ceil(qz.kBlocks / 2);
  for (let row = 0; row < n; row++) {
    for (let i = 0; i < k; i++) {
      const b = Math.floor(i / BLOCK);
      const byte = qz.packed[(row * qz.kBlocks + b) * (BLOCK / 2) + ((i % BLOCK) >> 1)]!;
      const q = (i & 1) === 0 ? byte & 15 : byte >> 4;
      const zb = qz.zeroPoints[row * zpStride + (b >> 1)]!;
      const zero = (b & 1) === 0 ? zb & 15 : zb >> 4;
      out[row * k + i] = qz.scales[row * qz.kBlocks + b]! * (q - zero);
    }
  }
  return out;
}

/**
 * 8-bit weights for MatMulInteger (the output head, graph-builder lmHead): one fp32 scale per
 * output row (max |w| / 127), values in -127..127 (round half up), stored transposed as [k, n]
 * because MatMulInteger's B is [in, out]. w is [n, k] row-major.
 */
export function quantizeInt8(w: Float32Array, n: number, k: number): { q: Int8Array; scales: Float32Array } {
  const q = new Int8Array(k * n);
  const scales = new Float32Array(n);
  for (let row = 0; row < n; row++) {
    let max = 0;
    for (let i = 0; i < k; i++) max = Math.max(max, Math.abs(w[row * k + i]!));
    const scale = max / 127;
    scales[row] = scale;
    const inv = scale === 0 ? 0 : 1 / scale;
    for (let i = 0; i < k; i++) q[i * n + row] = Math.max(-127, Math.min(127, round(w[row * k + i]! * inv)));
  }
  return { q, scales };
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
