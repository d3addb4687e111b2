// Every error the API returns, in OpenAI's envelope: {error: {message, type, param, code}}.
// Statuses follow the contract: never 408/409/429/5xx for something a retry cannot fix.

export type ErrorType = "invalid_request_error" | "authentication_error" | "not_found_error" | "server_error";

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType | string = "invalid_request_error",
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  get shouldRetry(): boolean {
    return this.status === 429 || this.status >= 500;
  }

  toJSON() {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }

  static badRequest(message: string, param: string | null = null, code: string | null = null): ApiError {
    return new ApiError(400, message, "invalid_request_error", param, code);
  }

  static unauthorized(message: string): ApiError {
    return new ApiError(401, message, "invalid_request_error", null, "invalid_api_key");
  }

  static notFound(message: string, param: string | null = null, code: string | null = null): ApiError {
    return new ApiError(404, message, "invalid_request_error", param, code);
  }

  /** An admin key on a project route, or a project key on an admin route. */
  static forbidden(message: string): ApiError {
    return new ApiError(403, message, "invalid_request_error", null, "insufficient_permissions");
  }

  /** The resource is busy with another request (a complete already under way). */
  static conflict(message: string, param: string | null = null, code: string | null = null): ApiError {
    return new ApiError(409, message, "invalid_request_error", param, code);
  }

  static noSuchFile(id: string): ApiError {
    return ApiError.notFound(`No such File object: ${id}`, "id");
  }

  static unknownRoute(method: string, url: string): ApiError {
    return ApiError.notFound(`Unrecognized request URL (${method} ${url}). Please check the URL and method.`);
  }

  static internal(): ApiError {
    return new ApiError(
      500,
      "The server had an error while processing your request. Sorry about that!",
      "server_error",
    );
  }
}
