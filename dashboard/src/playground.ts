// The playground: a streamed chat with any base model, ft: model or checkpoint.
import { api, streamChat } from "./api.js";
import { errorText, h, showError } from "./dom.js";

interface Message {
  role: "system" | "user" | "assistant";
  content: string;
}

export async function playgroundView(main: HTMLElement, preselect: string | undefined, signal: AbortSignal): Promise<void> {
  const models = (await api<{ data: { id: string }[] }>("GET", "/models")).data.map((m) => m.id);
  if (preselect && !models.includes(preselect)) models.unshift(preselect);
  const modelSel = h("select", { id: "chat-model" }, ...models.map((m) => h("option", { value: m, selected: m === preselect }, m)));
  const system = h("input", { id: "chat-system", placeholder: "optional system message" });
  const temperature = h("input", { id: "chat-temperature", type: "number", min: "0", max: "2", step: "0.1", value: "0" });
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: "1", step: "1", value: "128" });
  const prompt = h("textarea", { id: "chat-prompt", rows: "3", required: true, placeholder: "Ask something (Ctrl+Enter sends)" });
  const log = h("div", { id: "chat-log", class: "chat-log", "aria-live": "polite" });
  const send = h("button", { type: "submit", id: "chat-send" }, "Send");
  const history: Message[] = [];
  let inflight: AbortController | undefined;
  signal.addEventListener("abort", () => inflight?.abort(), { once: true });
  const bubble = (m: Message) => h("div", { class: `msg msg-${m.role}` }, h("strong", {}, m.role), h("p", {}, m.content));
  const submit = async () => {
    const text = prompt.value.trim();
    if (!text || inflight) return;
    showError(null);
    history.push({ role: "user", content: text });
    log.append(bubble(history[history.length - 1]!));
    prompt.value = "";
    const reply: Message = { role: "assistant", content: "" };
    const out = bubble(reply);
    out.classList.add("streaming");
    log.append(out);
    inflight = new AbortController();
    send.disabled = true;
    try {
      const messages = [...(system.value ? [{ role: "system", content: system.value }] : []), ...history];
      await streamChat({ model: modelSel.value, messages, temperature: Number(temperature.value), max_completion_tokens: Number(maxTokens.value) }, (d) => {
        reply.content += d;
        out.querySelector("p")!.textContent = reply.content;
      }, inflight.signal);
      history.push(reply);
    } catch (err) {
      if (!signal.aborted) showError(errorText(err));
    } finally {
      out.classList.remove("streaming");
      out.dataset.done = "true";
      inflight = undefined;
      send.disabled = false;
    }
  };
  prompt.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) void submit();
  });
  const clear = h("button", { type: "button", class: "secondary", onclick: () => { history.length = 0; log.replaceChildren(); } }, "Clear");
  main.replaceChildren(h("h1", {}, "Playground"),
    h("form", { class: "card", onsubmit: (e: Event) => { e.preventDefault(); void submit(); } },
      h("label", {}, "Model ", modelSel), h("label", {}, "System ", system),
      h("label", {}, "Temperature ", temperature), h("label", {}, "Max tokens ", maxTokens),
      log, h("label", { class: "wide" }, "Message ", prompt), h("div", { class: "actions" }, send, clear)));
}
