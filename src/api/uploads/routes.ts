// HTTP for /v1/uploads: parsing and wire shapes only; the logic is in service.ts.
import type { FastifyInstance, FastifyRequest } from "fastify";
import type { MultipartFile } from "@fastify/multipart";
import { ApiError } from "../errors.js";
import { zodToApiError } from "../plugins/errors.js";
import { completeUploadBody, createUploadBody, uploadIdParams } from "./schema.js";
import { MAX_PART_BYTES, type UploadsService } from "./service.js";

function parse<T>(schema: { safeParse(v: unknown): { success: true; data: T } | { success: false; error: import("zod").ZodError } }, value: unknown): T {
  const r = schema.safeParse(value ?? {});
  if (!r.success) throw zodToApiError(r.error);
  return r.data;
}

const uploadId = (request: FastifyRequest) => parse(uploadIdParams, request.params).upload_id;

/** The one `data` file of a part request, streamed to the service as it arrives. */
async function addPart(request: FastifyRequest, svc: UploadsService, projectId: string) {
  if (!request.isMultipart()) throw ApiError.badRequest("Expected a multipart/form-data request.", "data");
  const id = uploadId(request);
  let part: Awaited<ReturnType<UploadsService["addPart"]>> | undefined;
  for await (const field of request.parts({ limits: { fileSize: MAX_PART_BYTES, files: 1 } })) {
    if (field.type !== "file") continue;
    const file = field as MultipartFile;
    if (part || field.fieldname !== "data") {
      file.file.resume();
      throw ApiError.badRequest(`Unexpected file field '${field.fieldname}'; send the part's bytes as 'data'.`, "data");
    }
    part = await svc.addPart(projectId, id, file.file, () => file.file.truncated);
  }
  if (!part) throw ApiError.badRequest("Missing required parameter: 'data'.", "data", "missing_required_parameter");
  return part;
}

export function registerUploadRoutes(app: FastifyInstance, svc: UploadsService): void {
  app.post("/v1/uploads", async (request) => svc.create(request.project.id, parse(createUploadBody, request.body)));

  app.post("/v1/uploads/:upload_id/parts", async (request) => addPart(request, svc, request.project.id));

  app.post("/v1/uploads/:upload_id/complete", async (request) =>
    svc.complete(request.project.id, uploadId(request), parse(completeUploadBody, request.body)),
  );

  app.post("/v1/uploads/:upload_id/cancel", async (request) => svc.cancel(request.project.id, uploadId(request)));
}
