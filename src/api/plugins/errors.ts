// The one error handler: every failure leaves as OpenAI's envelope with all four keys, and
// `x-should-retry: false` whenever retrying cannot help.
import type { FastifyError, FastifyInstance, FastifyReply } from "fastify";
import { ZodError } from "zod";
import { ApiError } from "../errors.js";

export function zodToApiError(err: ZodError, prefix = ""): ApiError {
  const issue = err.issues[0]!;
  const param = [prefix, ...issue.path.map(String)].filter(Boolean).join(".") || null;
  const where = param ? ` - '${param}'` : "";
  return ApiError.badRequest(`${issue.message}${where}`, param, "invalid_value");
}

function fromFastifyError(err: FastifyError): ApiError | undefined {
  switch (err.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return ApiError.badRequest(
        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)",
      );
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
      return ApiError.badRequest(`Unsupported content type: ${err.message}`);
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return ApiError.badRequest("Request body is too large.");
    case "FST_INVALID_MULTIPART_CONTENT_TYPE":
      return ApiError.badRequest("Expected a multipart/form-data request.", "file");
    case "FST_PARTS_LIMIT":
    case "FST_FILES_LIMIT":
      return ApiError.badRequest("Exactly one file may be uploaded per request.", "file");
    case "FST_FIELDS_LIMIT":
      return ApiError.badRequest("Too many form fields.");
    case "FST_PROTO_VIOLATION":
      return ApiError.badRequest("Malformed form field name.");
    default:
      break;
  }
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
    return new ApiError(err.statusCode === 413 ? 400 : err.statusCode, err.message);
  }
  return undefined;
}

export function sendError(reply: FastifyReply, err: ApiError): FastifyReply {
  if (!err.shouldRetry) reply.header("x-should-retry", "false");
  // Overload (429/503) is worth retrying: say when, in whole seconds, as the SDKs read it.
  if (err.status === 429 || err.status === 503) reply.header("retry-after", "1");
  return reply.code(err.status).type("application/json; charset=utf-8").send(err.toJSON());
}

export function registerErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    let apiError: ApiError | undefined;
    if (error instanceof ApiError) apiError = error;
    else if (error instanceof ZodError) apiError = zodToApiError(error);
    else apiError = fromFastifyError(error);
    if (!apiError) {
      request.log.error({ err: error }, "unhandled error");
      apiError = ApiError.internal();
    }
    if (reply.sent || reply.raw.headersSent) {
      request.log.warn({ err: error }, "error after the response started");
      reply.raw.destroy();
      return;
    }
    return sendError(reply, apiError);
  });

  app.setNotFoundHandler((request, reply) => sendError(reply, ApiError.unknownRoute(request.method, request.url)));
}
