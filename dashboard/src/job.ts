// One job: status and actions, live loss curves, events, checkpoints and the result CSV.
import { api, fileText, listAll } from "./api.js";
import { LossChart, type MetricsPoint } from "./chart.js";
import { errorText, h, showError, table, when } from "./dom.js";
import { FINAL, poll, statusBadge, type Job } from "./jobs.js";

interface JobEvent {
  id: string;
  created_at: number;
  level: string;
  message: string;
  type: string;
  data: Record<string, unknown> | null;
}

interface Checkpoint {
  id: string;
  step_number: number;
  fine_tuned_model_checkpoint: string;
  metrics: Record<string, number>;
}

function actions(job: Job, refresh: () => Promise<unknown>): HTMLElement {
  const act = (verb: string) => h("button", { type: "button", id: `job-${verb}`, onclick: () => {
    api("POST", `/fine_tuning/jobs/${job.id}/${verb}`).then(refresh, (err: unknown) => showError(errorText(err)));
  } }, verb[0]!.toUpperCase() + verb.slice(1));
  const can = { cancel: !FINAL.has(job.status), pause: job.status === "running" || job.status === "queued", resume: job.status === "paused" };
  return h("div", { class: "actions" }, can.pause && act("pause"), can.resume && act("resume"), can.cancel && act("cancel"));
}

function summary(job: Job, refresh: () => Promise<unknown>): HTMLElement {
  const hp = Object.entries(job.hyperparameters).map(([k, v]) => `${k}=${String(v)}`).join(", ");
  const model = job.fine_tuned_model;
  return h("dl", { class: "card summary" },
    h("dt", {}, "Status"), h("dd", { id: "job-status" }, statusBadge(job.status)),
    h("dt", {}, "Base model"), h("dd", {}, job.model),
    h("dt", {}, "Hyperparameters"), h("dd", {}, hp),
    h("dt", {}, "Created / finished"), h("dd", {}, `${when(job.created_at)} / ${when(job.finished_at)}`),
    h("dt", {}, "Trained tokens"), h("dd", {}, String(job.trained_tokens ?? "—")),
    h("dt", {}, "Fine-tuned model"), h("dd", { id: "job-model" }, model ? h("a", { href: `#/playground/${encodeURIComponent(model)}` }, model) : "—"),
    job.error?.message && h("dt", {}, "Error"), job.error?.message && h("dd", { class: "error-text" }, job.error.message),
    h("dt", {}, "Actions"), h("dd", {}, actions(job, refresh)));
}

async function resultCsv(job: Job): Promise<HTMLElement | null> {
  const id = job.result_files[0];
  if (!id) return null;
  const csv = atob((await fileText(id)).trim());
  const href = URL.createObjectURL(new Blob([csv], { type: "text/csv" }));
  const rows = csv.trim().split("\n").map((l) => l.split(","));
  return h("section", { class: "card" }, h("h2", {}, "Result file"),
    h("a", { href, download: `${job.id}-step_metrics.csv`, id: "result-csv" }, "Download step_metrics.csv"),
    h("div", { class: "scroll" }, table(`Results (${id})`, rows[0] ?? [], rows.slice(1))));
}

export async function jobView(main: HTMLElement, id: string, signal: AbortSignal): Promise<void> {
  const head = h("div");
  const chartBox = h("div", { id: "loss-chart", class: "chart", role: "img", "aria-label": "Training and validation loss per step" });
  const events = h("div", { id: "job-events", class: "scroll" });
  const ckpts = h("div", { id: "job-checkpoints" });
  const result = h("div", { id: "job-result" });
  main.replaceChildren(h("h1", {}, "Job ", h("code", {}, id)), head,
    h("section", { class: "card" }, h("h2", {}, "Loss"), chartBox), ckpts, result, h("section", { class: "card" }, h("h2", {}, "Events"), events));
  const chart = new LossChart(chartBox);
  signal.addEventListener("abort", () => chart.destroy(), { once: true });
  const refresh = async (): Promise<boolean> => {
    const job = await api<Job>("GET", `/fine_tuning/jobs/${encodeURIComponent(id)}`);
    const evs = await listAll<JobEvent>(`/fine_tuning/jobs/${encodeURIComponent(id)}/events`);
    if (signal.aborted) return false;
    head.replaceChildren(summary(job, refresh));
    chart.update(evs.filter((e) => e.type === "metrics" && e.data).map((e) => e.data as unknown as MetricsPoint));
    events.replaceChildren(h("ol", { class: "events" }, ...evs.map((e) => h("li", { class: `level-${e.level}` }, h("time", {}, when(e.created_at)), " ", e.message))));
    const cps = await listAll<Checkpoint>(`/fine_tuning/jobs/${encodeURIComponent(id)}/checkpoints`);
    ckpts.replaceChildren(cps.length === 0 ? "" : h("section", { class: "card" }, table("Checkpoints", ["step", "train loss", "model"], cps.map((c) => [
      String(c.step_number), c.metrics.train_loss?.toFixed(4) ?? "—",
      h("a", { href: `#/playground/${encodeURIComponent(c.fine_tuned_model_checkpoint)}` }, c.fine_tuned_model_checkpoint),
    ]))));
    if (job.status === "succeeded" && result.childElementCount === 0) {
      const csv = await resultCsv(job);
      if (csv) result.replaceChildren(csv);
    }
    return !FINAL.has(job.status);
  };
  await poll(refresh, signal);
}
