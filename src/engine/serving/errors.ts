// What a serving backend reports when it cannot complete a request; the chat API maps each kind to
// its own error envelope. Messages never carry a replica's address (callers show them as they are).

/** unavailable: no replica could take the request (retryable); failed: a replica broke off or
 *  answered with an error of its own (retryable); bad_request and context_length: the request
 *  itself, as the engine judged it. */
export type ServingErrorKind = "unavailable" | "failed" | "bad_request" | "context_length";

export class ServingError extends Error {
  constructor(
    readonly kind: ServingErrorKind,
    message: string,
  ) {
    super(message);
  }
}
