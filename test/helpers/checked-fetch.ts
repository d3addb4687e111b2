// A fetch for the suites' clients that checks every live response of the real server against
// openapi.yaml: the status is documented for the operation, the content type is one the document
// gives for it, and the body matches its schema; a Server-Sent Events stream is checked chunk by
// chunk as the client reads it (each `data:` a ChatCompletionChunk, or an ErrorResponse after the
// first chunk, which ends the stream without `[DONE]` as openapi.yaml says; otherwise `data: [DONE]`
// ends it). A mismatch fails the request that got it (the SDK reports a
// connection error whose cause names the mismatch) and is kept in openApiViolations(), which
// TestServer.dispose() turns into a failure of the suite.
import { assertResponseMatches, assertSchemaMatches, documentedOperations, findResponse } from "./openapi.js";

const violations: string[] = [];

/** Every mismatch seen so far in this process. */
export function openApiViolations(): readonly string[] {
  return violations;
}

function violation(message: string): Error {
  violations.push(message);
  return new Error(`openapi.yaml mismatch: ${message}`);
}

/** The documented path template that `pathname` is an instance of (the one with fewest parameters). */
export function pathTemplateOf(method: string, pathname: string): string | undefined {
  const m = method.toLowerCase();
  const segments = pathname.split("/");
  const matches = documentedOperations()
    .filter((op) => op.method === m)
    .map((op) => op.path)
    .filter((template) => {
      const parts = template.split("/");
      return parts.length === segments.length && parts.every((p, i) => /^\{[^}]+\}$/.test(p) || p === segments[i]);
    });
  const params = (t: string) => (t.match(/\{/g) ?? []).length;
  return matches.sort((a, b) => params(a) - params(b))[0];
}

function mediaBase(type: string | null): string {
  return (type ?? "").split(";")[0]!.trim().toLowerCase();
}

function documentedMediaTypes(method: string, template: string, status: number): string[] {
  const content = findResponse(method, template, status).content;
  return content && typeof content === "object" ? Object.keys(content).map((t) => t.toLowerCase()) : [];
}

function checkBody(method: string, template: string, res: Response, bytes: Uint8Array): void {
  const where = `${method} ${template} ${res.status}`;
  const types = documentedMediaTypes(method, template, res.status);
  const type = mediaBase(res.headers.get("content-type"));
  if (types.length === 0) {
    if (bytes.length > 0) throw violation(`${where}: documented without a body, got ${bytes.length} bytes of ${type}`);
    return;
  }
  if (!types.includes(type)) throw violation(`${where}: content-type ${type || "(none)"} is not one of ${types.join(", ")}`);
  const text = new TextDecoder().decode(bytes);
  let body: unknown = bytes;
  if (type === "application/json" || type.endsWith("+json")) {
    try {
      body = JSON.parse(text);
    } catch {
      throw violation(`${where}: the ${type} body is not JSON: ${text.slice(0, 200)}`);
    }
  }
  try {
    assertResponseMatches(method, template, res.status, body);
  } catch (err) {
    throw violation((err as Error).message);
  }
}

/** A body that passes the stream through unchanged while checking each event. */
function checkedEventStream(where: string, body: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const decoder = new TextDecoder();
  let buffered = "";
  let chunks = 0;
  let done = false;
  let errored = false;
  const checkEvent = (event: string) => {
    for (const line of event.split("\n")) {
      if (!line.startsWith("data: ")) continue;
      const data = line.slice("data: ".length);
      if (done) throw violation(`${where}: an event after data: [DONE]`);
      if (errored) throw violation(`${where}: an event after the error event`);
      if (data === "[DONE]") {
        done = true;
        continue;
      }
      let parsed: unknown;
      try {
        parsed = JSON.parse(data);
      } catch {
        throw violation(`${where}: a data line that is not JSON: ${data.slice(0, 200)}`);
      }
      const schema = chunks > 0 && typeof parsed === "object" && parsed !== null && "error" in parsed ? "ErrorResponse" : "ChatCompletionChunk";
      errored = schema === "ErrorResponse";
      try {
        assertSchemaMatches(schema, parsed);
      } catch (err) {
        throw violation(`${where}: chunk ${chunks + 1}: ${(err as Error).message}`);
      }
      chunks++;
    }
  };
  return body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(bytes, controller) {
        buffered += decoder.decode(bytes, { stream: true });
        let end: number;
        while ((end = buffered.indexOf("\n\n")) >= 0) {
          checkEvent(buffered.slice(0, end));
          buffered = buffered.slice(end + 2);
        }
        controller.enqueue(bytes);
      },
      flush() {
        if (buffered.trim() !== "") throw violation(`${where}: the stream ends inside an event: ${buffered.slice(0, 200)}`);
        if (!done && !errored) throw violation(`${where}: the stream ends without data: [DONE]`);
      },
    }),
  );
}

async function check(method: string, url: URL, res: Response): Promise<Response> {
  const template = pathTemplateOf(method, url.pathname);
  if (template === undefined) {
    // Not an operation of the document (an unknown route): the server must still answer in the envelope.
    const text = await res.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw violation(`${method} ${url.href} ${res.status}: an undocumented route answered without JSON: ${text.slice(0, 200)}`);
    }
    if (res.status < 400) throw violation(`${method} ${url.pathname} answered ${res.status}, but openapi.yaml documents no such operation`);
    try {
      assertSchemaMatches("ErrorResponse", body);
    } catch (err) {
      throw violation((err as Error).message);
    }
    return new Response(text, { status: res.status, statusText: res.statusText, headers: res.headers });
  }
  const where = `${method} ${template} ${res.status}`;
  try {
    findResponse(method, template, res.status);
  } catch (err) {
    throw violation((err as Error).message);
  }
  if (mediaBase(res.headers.get("content-type")) === "text/event-stream" && res.body) {
    const types = documentedMediaTypes(method, template, res.status);
    if (!types.includes("text/event-stream")) throw violation(`${where}: content-type text/event-stream is not one of ${types.join(", ")}`);
    return new Response(checkedEventStream(where, res.body), { status: res.status, statusText: res.statusText, headers: res.headers });
  }
  const bytes = new Uint8Array(await res.arrayBuffer());
  checkBody(method, template, res, bytes);
  const nullBody = method === "HEAD" || [101, 204, 205, 304].includes(res.status);
  return new Response(nullBody ? null : bytes, { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** fetch, with every response checked against openapi.yaml before the caller sees it. */
export const checkedFetch: typeof fetch = async (input, init) => {
  // Not `new Request(input, init)`: that would take a streamed upload body away from the fetch.
  const method = init?.method ?? (input instanceof Request ? input.method : "GET");
  const url = new URL(input instanceof Request ? input.url : input);
  const res = await fetch(input, init);
  // The SDK also fetches data: URLs of its own; only the server's answers are checked.
  if (url.protocol !== "http:") return res;
  return check(method.toUpperCase(), url, res);
};
