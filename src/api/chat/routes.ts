// HTTP for POST /v1/chat/completions: a JSON completion, or Server-Sent Events when stream is
// true (each chunk its own `data:` event with a blank line after it, then `data: [DONE]`, then the
// connection closes — what both SDKs' parsers need). A client that goes away stops its generation.
import type { FastifyInstance, FastifyReply } from "fastify";
import { ApiError } from "../errors.js";
import { zodToApiError } from "../plugins/errors.js";
import { chatCompletionBody } from "./schema.js";
import type { ChatService } from "./service.js";

/** Aborts when the client disconnects before the response is finished. */
function disconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.on("close", () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}

export function registerChatRoutes(app: FastifyInstance, svc: ChatService): void {
  app.post("/v1/chat/completions", async (request, reply) => {
    const raw = request.body;
    if (raw === undefined || raw === null || typeof raw !== "object" || Array.isArray(raw)) {
      throw ApiError.badRequest("The request body must be a JSON object.", null);
    }
    const parsed = chatCompletionBody.safeParse(raw);
    if (!parsed.success) throw zodToApiError(parsed.error);
    // Which engine serves the model (onnx or vllm), on every response once the model is known.
    const prepared = await svc.prepare(request.project.id, raw as Record<string, unknown>, parsed.data, (backend) => reply.header("x-openft-backend", backend));
    const signal = disconnectSignal(reply);
    if (!parsed.data.stream) return svc.complete(prepared, signal);

    reply.hijack();
    reply.raw.writeHead(200, {
      ...(reply.getHeaders() as Record<string, string>),
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    await svc.stream(prepared, signal, (payload) => {
      if (!reply.raw.writableEnded) reply.raw.write(`data: ${payload === "[DONE]" ? payload : JSON.stringify(payload)}\n\n`);
    });
    reply.raw.end();
  });
}
