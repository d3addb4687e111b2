// HTTP for /v1/files: multipart parsing and wire shapes only; the logic is in service.ts.
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { MultipartFile } from "@fastify/multipart";
import { ApiError } from "../errors.js";
import { zodToApiError } from "../plugins/errors.js";
import { unstorableAt, unstorableError } from "../plugins/text-guard.js";
import { expiresAfterSeconds, fileIdParams, listFilesQuery, UPLOAD_PURPOSES, type UploadPurpose } from "./schema.js";
import type { FilesService, ReceivedUpload } from "./service.js";

interface UploadForm {
  purpose?: string;
  anchor?: string;
  seconds?: string;
}

function parsePurpose(value: string | undefined): UploadPurpose {
  if (value === undefined || value === "") {
    throw ApiError.badRequest("Missing required parameter: 'purpose'.", "purpose", "missing_required_parameter");
  }
  if (!(UPLOAD_PURPOSES as readonly string[]).includes(value)) {
    throw ApiError.badRequest(
      `'${value}' is not one of ${JSON.stringify(UPLOAD_PURPOSES)} - 'purpose'`,
      "purpose",
      "invalid_value",
    );
  }
  return value as UploadPurpose;
}

function parseExpiresAfter(form: UploadForm): number | undefined {
  if (form.anchor === undefined && form.seconds === undefined) return undefined;
  if (form.anchor !== "created_at") {
    throw ApiError.badRequest("expires_after[anchor] must be 'created_at'.", "expires_after.anchor", "invalid_value");
  }
  const parsed = expiresAfterSeconds.safeParse(form.seconds);
  if (!parsed.success) {
    throw ApiError.badRequest(
      "expires_after[seconds] must be an integer between 3600 (1 hour) and 2592000 (30 days).",
      "expires_after.seconds",
      "invalid_value",
    );
  }
  return parsed.data;
}

const FORM_FIELDS = { purpose: "purpose", "expires_after[anchor]": "anchor", "expires_after[seconds]": "seconds" } as const;

/** Each form field at most once: a second `purpose` after the file would otherwise change what
 *  the file was checked as (the line check runs while it streams, by the purpose before it). */
function readField(form: UploadForm, name: string, value: string): void {
  const key = Object.hasOwn(FORM_FIELDS, name) ? FORM_FIELDS[name as keyof typeof FORM_FIELDS] : undefined;
  if (key === undefined) return;
  const param = name.replace(/\[(\w+)\]$/, ".$1");
  if (form[key] !== undefined) throw ApiError.badRequest(`'${name}' was given more than once; send each form field once.`, param, "invalid_value");
  if (unstorableAt(value)) throw unstorableError(param);
  form[key] = value;
}

async function receiveUpload(request: FastifyRequest, files: FilesService) {
  if (!request.isMultipart()) throw ApiError.badRequest("Expected a multipart/form-data request.", "file");
  const form: UploadForm = {};
  let received: ReceivedUpload | undefined;
  try {
    for await (const part of request.parts()) {
      if (part.type === "file") {
        const file = part as MultipartFile;
        if (received || part.fieldname !== "file") {
          file.file.resume();
          throw ApiError.badRequest(`Unexpected file field '${part.fieldname}'; send one file as 'file'.`, "file");
        }
        if (unstorableAt(file.filename)) {
          file.file.resume();
          throw unstorableError("file");
        }
        received = await files.receive(file.file, file.filename, {
          // Purpose sent before the file lets us skip the line check for other purposes.
          checkLines: form.purpose === undefined || form.purpose === "fine-tune",
          truncated: () => file.file.truncated,
        });
        continue;
      }
      readField(form, part.fieldname, typeof part.value === "string" ? part.value : String(part.value));
    }
    if (!received) throw ApiError.badRequest("Missing required parameter: 'file'.", "file", "missing_required_parameter");
    const purpose = parsePurpose(form.purpose);
    const expiresAfter = parseExpiresAfter(form);
    if (purpose === "fine-tune" && received.jsonl === undefined) {
      throw new Error("fine-tune upload arrived without a line check");
    }
    return { received, purpose, expiresAfter };
  } catch (err) {
    if (received) await files.abandon(received);
    throw err;
  }
}

export function registerFileRoutes(app: FastifyInstance, files: FilesService): void {
  app.post("/v1/files", async (request) => {
    const projectId = request.project.id;
    const { received, purpose, expiresAfter } = await receiveUpload(request, files);
    return files.commit(received, { projectId, purpose, expiresAfterSeconds: expiresAfter });
  });

  app.get("/v1/files", async (request) => {
    const q = listFilesQuery.safeParse(request.query);
    if (!q.success) throw zodToApiError(q.error);
    return files.list(request.project.id, q.data);
  });

  app.get("/v1/files/:file_id", async (request) => {
    const { file_id } = fileIdParams.parse(request.params);
    return files.retrieve(request.project.id, file_id);
  });

  app.delete("/v1/files/:file_id", async (request) => {
    const { file_id } = fileIdParams.parse(request.params);
    return files.delete(request.project.id, file_id);
  });

  app.get("/v1/files/:file_id/content", async (request, reply) => {
    const { file_id } = fileIdParams.parse(request.params);
    const { file, body } = await files.content(request.project.id, file_id);
    reply
      .type("application/octet-stream")
      .header("content-length", String(file.bytes))
      .header("content-disposition", `attachment; filename="${encodeURIComponent(file.filename)}"`);
    return reply.send(body);
  });
}
