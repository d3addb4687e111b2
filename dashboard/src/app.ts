// Entry: the key prompt, then a hash router over the views (#/files, #/jobs, #/jobs/ID,
// #/playground[/MODEL]). Each view gets an AbortSignal that ends its polling when it is left.
import { api, ApiFailure, session } from "./api.js";
import { errorText, h, showError } from "./dom.js";
import { filesView } from "./files.js";
import { jobView } from "./job.js";
import { jobsView } from "./jobs.js";
import { playgroundView } from "./playground.js";

const main = document.getElementById("main")!;
const nav = document.getElementById("nav")!;
let current: AbortController | undefined;

function loginView(message?: string): void {
  nav.hidden = true;
  const key = h("input", { id: "api-key", type: "password", autocomplete: "off", required: true, placeholder: "sk-…" });
  const form = h("form", { class: "card login", onsubmit: (e: Event) => {
    e.preventDefault();
    void login(key.value.trim());
  } },
  h("h1", {}, "openft dashboard"),
  h("p", {}, "Paste an API key of your project. It stays in this browser tab only (session storage)."),
  h("label", {}, "API key ", key), h("button", { type: "submit", id: "login" }, "Sign in"));
  main.replaceChildren(form);
  showError(message ?? null);
  key.focus();
}

async function login(key: string): Promise<void> {
  session.key = key;
  try {
    await api("GET", "/models");
  } catch (err) {
    session.key = null;
    const why = err instanceof ApiFailure && err.status === 401 ? `That API key was not accepted: ${err.message}` : `Cannot reach the API: ${errorText(err)}`;
    return loginView(why);
  }
  if (location.hash === "" || location.hash === "#/login") location.hash = "#/jobs";
  else void route();
}

async function route(): Promise<void> {
  current?.abort();
  const ctl = new AbortController();
  current = ctl;
  if (!session.key) return loginView();
  nav.hidden = false;
  showError(null);
  const [, view, arg] = location.hash.split("/");
  for (const a of nav.querySelectorAll("a")) a.toggleAttribute("aria-current", a.getAttribute("href") === `#/${view ?? ""}`);
  try {
    if (view === "files") await filesView(main);
    else if (view === "jobs" && arg) await jobView(main, decodeURIComponent(arg), ctl.signal);
    else if (view === "playground") await playgroundView(main, arg ? decodeURIComponent(arg) : undefined, ctl.signal);
    else await jobsView(main, ctl.signal);
  } catch (err) {
    if (err instanceof ApiFailure && err.status === 401) {
      session.key = null;
      return loginView(`The API key is no longer accepted: ${err.message}`);
    }
    if (!ctl.signal.aborted) showError(errorText(err));
  }
}

document.getElementById("logout")!.addEventListener("click", () => {
  session.key = null;
  location.hash = "#/login";
  loginView();
});
window.addEventListener("hashchange", () => void route());
void route();
