// Jobs: create from a file and a base model with hyperparameters; the list with live status.
import { api, listAll } from "./api.js";
import { errorText, h, showError, table, when } from "./dom.js";
import type { FileObject } from "./files.js";

export interface Job {
  id: string;
  model: string;
  status: string;
  created_at: number;
  finished_at: number | null;
  fine_tuned_model: string | null;
  training_file: string;
  result_files: string[];
  trained_tokens: number | null;
  error: { message: string } | null;
  hyperparameters: Record<string, unknown>;
}

export const FINAL = new Set(["succeeded", "failed", "cancelled"]);

export function statusBadge(status: string): HTMLElement {
  return h("span", { class: `status status-${status}`, "data-status": status }, status);
}

function numberField(id: string, label: string, attrs: Record<string, string>): [HTMLLabelElement, HTMLInputElement] {
  const input = h("input", { id, type: "number", placeholder: "auto", ...attrs });
  return [h("label", {}, `${label} `, input), input];
}

async function createForm(onCreated: (id: string) => void): Promise<HTMLFormElement> {
  const [files, models] = await Promise.all([listAll<FileObject>("/files?purpose=fine-tune"), api<{ data: { id: string }[] }>("GET", "/models")]);
  const fileSel = h("select", { id: "job-file", required: true }, ...files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id})`)));
  const validSel = h("select", { id: "job-validation-file" }, h("option", { value: "" }, "none"), ...files.map((f) => h("option", { value: f.id }, `${f.filename} (${f.id})`)));
  const modelSel = h("select", { id: "job-model", required: true }, ...models.data.map((m) => h("option", { value: m.id }, m.id)));
  const [epochsL, epochs] = numberField("job-epochs", "Epochs", { min: "1", max: "50", step: "1" });
  const [batchL, batch] = numberField("job-batch", "Batch size", { min: "1", max: "256", step: "1" });
  const [lrL, lr] = numberField("job-lr", "Learning rate multiplier", { min: "0", step: "any" });
  const [rankL, rank] = numberField("job-rank", "LoRA rank", { min: "1", max: "256", step: "1" });
  const suffix = h("input", { id: "job-suffix", maxlength: "64", placeholder: "optional" });
  const form = h("form", { class: "card", onsubmit: (e: Event) => {
    e.preventDefault();
    const hp: Record<string, number> = {};
    const put = (k: string, el: HTMLInputElement) => el.value !== "" && (hp[k] = Number(el.value));
    put("n_epochs", epochs); put("batch_size", batch); put("learning_rate_multiplier", lr); put("lora_rank", rank);
    const body = {
      model: modelSel.value, training_file: fileSel.value, hyperparameters: hp,
      ...(validSel.value ? { validation_file: validSel.value } : {}), ...(suffix.value ? { suffix: suffix.value } : {}),
    };
    api<Job>("POST", "/fine_tuning/jobs", body).then((j) => onCreated(j.id), (err: unknown) => showError(errorText(err)));
  } },
  h("h2", {}, "Create a fine-tuning job"),
  h("label", {}, "Training file ", fileSel), h("label", {}, "Validation file ", validSel), h("label", {}, "Base model ", modelSel),
  epochsL, batchL, lrL, rankL, h("label", {}, "Suffix ", suffix),
  h("button", { type: "submit", id: "job-create" }, "Create job"));
  return form;
}

export async function jobsView(main: HTMLElement, signal: AbortSignal): Promise<void> {
  const list = h("div", { id: "jobs-list" });
  const refresh = async () => {
    const jobs = await listAll<Job>("/fine_tuning/jobs");
    list.replaceChildren(table("Fine-tuning jobs", ["job", "base", "status", "created", "model"], jobs.map((j) => [
      h("a", { href: `#/jobs/${j.id}` }, j.id), j.model, statusBadge(j.status), when(j.created_at), j.fine_tuned_model ?? "—",
    ])));
    return jobs.some((j) => !FINAL.has(j.status));
  };
  main.replaceChildren(h("h1", {}, "Fine-tuning jobs"), await createForm((id) => (location.hash = `#/jobs/${id}`)), list);
  await poll(refresh, signal);
}

/** Runs `tick` now and every 2 s while it says there is more to see and the view is open. */
export async function poll(tick: () => Promise<boolean>, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    let more = false;
    try {
      more = await tick();
    } catch (err) {
      if (!signal.aborted) showError(errorText(err));
    }
    if (!more) return;
    await new Promise((r) => setTimeout(r, 2000));
  }
}
