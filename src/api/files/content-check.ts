// The checks a new File passes, whether it came in one request (/v1/files) or in parts
// (/v1/uploads): the size limit and, for purpose fine-tune, OpenAI's `.jsonl` line rule.
import { ApiError } from "../errors.js";
import type { JsonlProblem } from "./jsonl-check.js";

export interface ReceivedContent {
  readonly filename: string;
  readonly bytes: number;
  readonly tooLarge: boolean;
  /** undefined when the lines were not checked (the purpose was known not to need it). */
  readonly jsonl: { readonly problem: JsonlProblem | undefined; readonly lines: number } | undefined;
}

/** Throws the 400 OpenAI answers for content that cannot become a File of this purpose. */
export function checkFileContent(c: ReceivedContent, purpose: string, maxBytes: number, param: string): void {
  if (c.tooLarge) {
    throw ApiError.badRequest(`File is too large: the limit is ${maxBytes} bytes.`, param, "file_too_large");
  }
  if (purpose !== "fine-tune") return;
  if (!c.filename.toLowerCase().endsWith(".jsonl")) {
    throw ApiError.badRequest("Invalid file format for Fine-Tuning API. Must be .jsonl", param, "invalid_file_format");
  }
  if (c.bytes === 0) throw ApiError.badRequest("The file is empty.", param, "invalid_file_format");
  const problem = c.jsonl?.problem;
  if (problem) {
    throw ApiError.badRequest(
      `Invalid file format for Fine-Tuning API. Expected file to have JSONL format, where every line is a valid JSON dictionary. Line ${problem.line} ${problem.reason}.`,
      param,
      "invalid_file_format",
    );
  }
}
