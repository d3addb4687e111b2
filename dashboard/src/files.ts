// Files: upload with progress, list, delete.
import { api, listAll, uploadFile } from "./api.js";
import { bytes, errorText, h, showError, table, when } from "./dom.js";

export interface FileObject {
  id: string;
  filename: string;
  purpose: string;
  bytes: number;
  created_at: number;
}

export async function filesView(main: HTMLElement): Promise<void> {
  const input = h("input", { type: "file", id: "upload-file", accept: ".jsonl,application/jsonl", required: true });
  const purpose = h("select", { id: "upload-purpose" }, ...["fine-tune", "user_data", "batch"].map((p) => h("option", { value: p }, p)));
  const progress = h("progress", { id: "upload-progress", max: "1", value: "0", hidden: true });
  const status = h("p", { id: "upload-status", role: "status" });
  const list = h("div", { id: "files-list" });
  const refresh = async () => {
    const files = await listAll<FileObject>("/files");
    list.replaceChildren(table("Files", ["id", "name", "purpose", "size", "created", ""], files.map((f) => [
      h("code", {}, f.id), f.filename, f.purpose, bytes(f.bytes), when(f.created_at),
      h("button", { type: "button", class: "danger", "aria-label": `Delete ${f.filename}`, onclick: () => void remove(f) }, "Delete"),
    ])));
  };
  const remove = async (f: FileObject) => {
    if (!confirm(`Delete ${f.filename} (${f.id})?`)) return;
    try {
      await api("DELETE", `/files/${encodeURIComponent(f.id)}`);
      await refresh();
    } catch (err) {
      showError(errorText(err));
    }
  };
  const form = h("form", { class: "card", onsubmit: (e: Event) => {
    e.preventDefault();
    const file = input.files?.[0];
    if (!file) return;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = `Uploading ${file.name}…`;
    uploadFile(file, purpose.value, (f) => (progress.value = f))
      .then(async (r) => {
        status.textContent = `Uploaded ${file.name} as ${r.id}.`;
        form.reset();
        await refresh();
      })
      .catch((err: unknown) => {
        status.textContent = "";
        showError(errorText(err));
      })
      .finally(() => (progress.hidden = true));
  } },
  h("h2", {}, "Upload a file"),
  h("label", {}, "File ", input), h("label", {}, "Purpose ", purpose),
  h("button", { type: "submit", id: "upload-button" }, "Upload"), progress, status);
  main.replaceChildren(h("h1", {}, "Files"), form, list);
  await refresh();
}
