// Resource ids: OpenAI's prefixes followed by enough randomness to be unguessable.
import { randomBytes, createHash } from "node:crypto";

const ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** n characters from a 62-letter alphabet, rejection-sampled so every letter is equally likely. */
export function randomAlnum(n: number): string {
  let out = "";
  while (out.length < n) {
    for (const b of randomBytes(n * 2)) {
      if (b < 248 && out.length < n) out += ALPHABET[b % 62];
    }
  }
  return out;
}

export const newId = {
  file: () => `file-${randomAlnum(24)}`,
  upload: () => `upload-${randomAlnum(24)}`,
  project: () => `proj_${randomAlnum(24)}`,
  apiKey: () => `key_${randomAlnum(24)}`,
  request: () => `req_${randomAlnum(24)}`,
  chatCompletion: () => `chatcmpl-${randomAlnum(29)}`,
  fineTuningJob: () => `ftjob-${randomAlnum(24)}`,
  fineTuningEvent: () => `ftevent-${randomAlnum(24)}`,
  checkpoint: () => `ftckpt_${randomAlnum(24)}`,
  worker: () => `wrk_${randomAlnum(20)}`,
  workerToken: () => `wt-${randomAlnum(40)}`,
  /** The lease owner of one API process's file validator. */
  validatorOwner: () => `api-${randomAlnum(24)}`,
};

export function newApiKeySecret(kind: "project" | "admin" = "project"): string {
  return `sk-${kind === "admin" ? "admin-" : ""}openft-${randomAlnum(40)}`;
}

export function sha256Hex(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

export function nowSeconds(): number {
  return Math.floor(Date.now() / 1000);
}
