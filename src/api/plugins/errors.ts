// The one error handler: every failure leaves as OpenAI's envelope with all four keys, and
// `x-should-retry: false` whenever retrying cannot help.
import type { Socket } from "node:net";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { ZodError } from "zod";
import { newId } from "../../ids.js";
import { ApiError } from "../errors.js";

// The errors @fastify/busboy raises for a body that is not the multipart it claims to be (no or
// a wrong boundary, a boundary over its 256-byte limit, a body cut short); they carry no code.
const MALFORMED_MULTIPART = /^(Multipart: Boundary not found|Boundary required|The needle cannot|.*unexpected end of multipart data)/i;

export function zodToApiError(err: ZodError, prefix = ""): ApiError {
  const issue = err.issues[0]!;
  // An unknown key (`after[]=x` in a query) is named without its brackets.
  const path = issue.code === "unrecognized_keys" ? [...issue.path, issue.keys[0]!.replace(/\[.*$/, "")] : issue.path;
  const param = [prefix, ...path.map(String)].filter(Boolean).join(".") || null;
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
  if (err.statusCode === undefined && MALFORMED_MULTIPART.test(err.message)) {
    return ApiError.badRequest(`Malformed multipart/form-data body: ${err.message}.`, "file");
  }
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
    return ApiError.fromStatus(err.statusCode, err.message);
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

const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;

/** After authentication and before any body parsing (a QUERY request would otherwise get
 *  fastify's 400 for its missing Content-Type): an unknown path answers 404, a known path with
 *  a method it does not serve 405 with `Allow`, whatever the body. */
export function registerUnknownRoutes(app: FastifyInstance): void {
  app.addHook("onRequest", async (request, reply) => {
    if (!request.is404) return;
    const url = request.url.split("?")[0]!;
    const allow = METHODS.filter((method) => app.findRoute({ method, url }) !== null);
    if (allow.length === 0) return sendError(reply, ApiError.unknownRoute(request.method, request.url));
    reply.header("allow", allow.join(", "));
    return sendError(reply, ApiError.of("method_not_allowed", `Unrecognized request URL (${request.method} ${request.url}). Please check the URL and method.`));
  });
}

/** fastify's `frameworkErrors`: a path that is not valid percent-encoding, or a parameter over
 *  the router's maxParamLength, answered in the envelope instead of fastify's own shape. */
export function frameworkErrors(err: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  reply.header("x-request-id", request.id);
  const apiError =
    err.code === "FST_ERR_MAX_PARAM_LENGTH"
      ? ApiError.of("uri_too_long", "A path parameter of this URL is too long.")
      : ApiError.badRequest(`The URL path is not valid: ${err.message}.`);
  void sendError(reply, apiError);
}

/** fastify's `clientErrorHandler`: what node's HTTP parser rejects before any route (headers
 *  over its size limit, a malformed request line) still gets the envelope and an x-request-id. */
export function clientErrorHandler(err: Error & { code?: string }, socket: Socket): void {
  if (err.code === "ECONNRESET" || socket.destroyed) return;
  const apiError =
    err.code === "HPE_HEADER_OVERFLOW"
      ? ApiError.of("header_fields_too_large", "The request headers are too large.")
      : ApiError.badRequest("The HTTP request is malformed.");
  const body = JSON.stringify(apiError.toJSON());
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${apiError.status} ${apiError.status === 431 ? "Request Header Fields Too Large" : "Bad Request"}\r\n` +
        `content-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
        `x-request-id: ${newId.request()}\r\nx-should-retry: false\r\nconnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
