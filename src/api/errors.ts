// Every error the API returns, in OpenAI's envelope: {error: {message, type, param, code}}.
// Statuses follow the contract: never 408/409/429/5xx for something a retry cannot fix.

export type ErrorType = "invalid_request_error" | "requests" | "server_error";

/** Every kind of error the API answers, with its status and envelope type and code, in one table
 *  (as fastify's lib/errors.js keeps its own). A key that is also the wire `code` is sent as the
 *  code; the other keys (`bad_request`, `not_found`, ...) send `code: null`. */
export const ERRORS = {
  bad_request: { status: 400, code: null },
  invalid_value: { status: 400 },
  invalid_type: { status: 400 },
  missing_required_parameter: { status: 400 },
  unknown_parameter: { status: 400 },
  unsupported_parameter: { status: 400 },
  invalid_file: { status: 400 },
  invalid_file_format: { status: 400 },
  file_too_large: { status: 400 },
  invalid_job_state: { status: 400 },
  invalid_upload_state: { status: 400 },
  invalid_upload_size: { status: 400 },
  checksum_mismatch: { status: 400 },
  model_not_available: { status: 400 },
  context_length_exceeded: { status: 400 },
  invalid_api_key: { status: 401 },
  model_not_deletable: { status: 403 },
  // An admin key on a project route, or a project key on an admin route.
  insufficient_permissions: { status: 403 },
  not_found: { status: 404, code: null },
  model_not_found: { status: 404 },
  unsupported_feature: { status: 404 },
  method_not_allowed: { status: 405, code: null },
  // The worker protocol: another worker holds the job now; retrying cannot win it back.
  lease_lost: { status: 409 },
  // The resource is busy with another request (an upload's complete already under way).
  upload_in_progress: { status: 409 },
  uri_too_long: { status: 414, code: null },
  rate_limit_exceeded: { status: 429, type: "requests" },
  header_fields_too_large: { status: 431, code: null },
  server_error: { status: 500, type: "server_error", code: null },
  // A serving backend (a vLLM replica) broke off or answered an error of its own; none could take it.
  engine_error: { status: 502, type: "server_error" },
  engine_unavailable: { status: 503, type: "server_error" },
} as const satisfies Record<string, { status: number; type?: ErrorType; code?: null }>;

export type ErrorKind = keyof typeof ERRORS;
/** The kinds answered with `status`. */
export type KindOf<S extends number> = { [K in ErrorKind]: (typeof ERRORS)[K]["status"] extends S ? K : never }[ErrorKind];

export class ApiError extends Error {
  readonly status: number;
  readonly type: ErrorType;
  readonly code: string | null;

  private constructor(
    readonly kind: ErrorKind,
    message: string,
    readonly param: string | null,
  ) {
    super(message);
    const entry: { status: number; type?: ErrorType; code?: null } = ERRORS[kind];
    this.status = entry.status;
    this.type = entry.type ?? "invalid_request_error";
    this.code = entry.code === null ? null : kind;
  }

  static of(kind: ErrorKind, message: string, param: string | null = null): ApiError {
    return new ApiError(kind, message, param);
  }

  get shouldRetry(): boolean {
    return this.status === 429 || this.status >= 500;
  }

  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  static badRequest(message: string, param: string | null = null, code: KindOf<400> = "bad_request"): ApiError {
    return new ApiError(code, message, param);
  }

  static unauthorized(message: string): ApiError {
    return new ApiError("invalid_api_key", message, null);
  }

  static notFound(message: string, param: string | null = null, code: KindOf<404> = "not_found"): ApiError {
    return new ApiError(code, message, param);
  }

  /** An admin key on a project route, or a project key on an admin route. */
  static forbidden(message: string): ApiError {
    return new ApiError("insufficient_permissions", message, null);
  }

  /** The resource is busy with another request (a complete already under way). */
  static conflict(message: string, param: string | null = null): ApiError {
    return new ApiError("upload_in_progress", message, param);
  }

  static noSuchFile(id: string): ApiError {
    return ApiError.notFound(`No such File object: ${id}`, "id");
  }

  static noSuchJob(id: string): ApiError {
    return ApiError.notFound(`No such fine-tuning job: ${id}`, "fine_tuning_job_id");
  }

  static noSuchModel(id: string): ApiError {
    return ApiError.notFound(`The model '${id}' does not exist`, "model", "model_not_found");
  }

  /** The 404 of an id that names nothing, by the path parameter it came in. */
  static unknownId(param: string, id: string): ApiError {
    if (param === "file_id") return ApiError.noSuchFile(id);
    if (param === "fine_tuning_job_id") return ApiError.noSuchJob(id);
    if (param === "model") return ApiError.noSuchModel(id);
    return ApiError.notFound(`No such ${param}: ${id}`, param);
  }

  static unknownRoute(method: string, url: string): ApiError {
    return ApiError.notFound(`Unrecognized request URL (${method} ${url}). Please check the URL and method.`);
  }

  /** A framework error's 4xx status as the table's kind for it (400 when the table has none). */
  static fromStatus(status: number, message: string): ApiError {
    const kind = (Object.keys(ERRORS) as ErrorKind[]).find((k) => ERRORS[k].status === status && "code" in ERRORS[k]);
    return new ApiError(kind ?? "bad_request", message, null);
  }

  static internal(): ApiError {
    return new ApiError("server_error", "The server had an error while processing your request. Sorry about that!", null);
  }
}
