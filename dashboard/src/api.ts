// The public /v1 API with the key kept in this tab's sessionStorage. Errors carry OpenAI's
// envelope message so the page can show it as it is.
const KEY = "openft.apiKey";

export class ApiFailure extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

export const session = {
  get key(): string | null {
    return sessionStorage.getItem(KEY);
  },
  set key(v: string | null) {
    if (v === null) sessionStorage.removeItem(KEY);
    else sessionStorage.setItem(KEY, v);
  },
};

function headers(extra: Record<string, string> = {}): Record<string, string> {
  return { Authorization: `Bearer ${session.key ?? ""}`, ...extra };
}

async function failure(res: Response): Promise<ApiFailure> {
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = (await res.json()) as { error?: { message?: string } };
    if (body.error?.message) message = body.error.message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiFailure(res.status, message);
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(`/v1${path}`, {
    method,
    headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

/** Every page of a cursor-paged list (`after` = the last id while has_more). */
export async function listAll<T extends { id: string }>(path: string, limit = 100): Promise<T[]> {
  const out: T[] = [];
  let after = "";
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api<{ data: T[]; has_more: boolean }>("GET", `${path}${sep}limit=${limit}${after}`);
    out.push(...page.data);
    if (!page.has_more || page.data.length === 0) return out;
    after = `&after=${encodeURIComponent(page.data[page.data.length - 1]!.id)}`;
  }
}

/** Multipart upload with progress (fetch cannot report upload progress; XHR can). */
export function uploadFile(file: File, purpose: string, onProgress: (fraction: number) => void): Promise<{ id: string }> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", `Bearer ${session.key ?? ""}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiFailure(0, "The upload failed: the server could not be reached."));
    xhr.onload = () => {
      let body: { id?: string; error?: { message?: string } } = {};
      try {
        body = JSON.parse(xhr.responseText) as typeof body;
      } catch {
        // handled below
      }
      if (xhr.status === 200 && body.id) resolve({ id: body.id });
      else reject(new ApiFailure(xhr.status, body.error?.message ?? `upload failed (${xhr.status})`));
    };
    const form = new FormData();
    form.append("purpose", purpose);
    form.append("file", file);
    xhr.send(form);
  });
}

/** A file's bytes as text (result files are base64, as OpenAI serves them). */
export async function fileText(id: string): Promise<string> {
  const res = await fetch(`/v1/files/${encodeURIComponent(id)}/content`, { headers: headers() });
  if (!res.ok) throw await failure(res);
  return res.text();
}

/** A streamed chat completion: calls onDelta with each piece of text as it arrives. */
export async function streamChat(body: Record<string, unknown>, onDelta: (text: string) => void, signal: AbortSignal): Promise<void> {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!res.ok || !res.body) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) !== -1) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
      if (data === "" || data === "[DONE]") continue;
      const chunk = JSON.parse(data) as { error?: { message: string }; choices?: { delta?: { content?: string } }[] };
      if (chunk.error) throw new ApiFailure(500, chunk.error.message);
      const text = chunk.choices?.[0]?.delta?.content;
      if (text) onDelta(text);
    }
  }
}
