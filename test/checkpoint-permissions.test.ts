// Checkpoint permissions through the official Node SDK, with the real trainer and the real
// inference engine on a tiny Llama: admin keys vs project keys; a granted project trains from
// the owner's checkpoint and chats with it, sees nothing else of the owner's; a revoke holds at once.
import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import OpenAI, { toFile } from "openai";
import { waitForStatus } from "./helpers/jobs.js";
import { assertResponseMatches } from "./helpers/openapi.js";
import { startServer, type TestServer } from "./helpers/server.js";
import { buildTinyModel } from "./helpers/tiny-weights.js";

const example = (i: number) => JSON.stringify({ messages: [{ role: "user", content: `word ${i}?` }, { role: "assistant", content: "banana" }] });
const jsonl = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => example(i)).join("\n") + "\n");

async function rejects(p: Promise<unknown>, cls: new (...args: never[]) => Error, re: RegExp = /./) {
  const err = await p.then(
    () => assert.fail("expected an error"),
    (e: unknown) => e,
  );
  assert.ok(err instanceof cls, `expected ${cls.name}, got ${String(err)}`);
  assert.match((err as Error).message, re);
}

describe("checkpoint permissions", () => {
  let server: TestServer;
  let owner: OpenAI;
  let other: OpenAI;
  let admin: OpenAI;
  let checkpoint: string;
  let ownerModel: string;
  let otherFile: string;
  let ownerFile: string;
  // The SDKs send admin routes' key from `adminAPIKey` (OPENAI_ADMIN_KEY), not `apiKey`.
  const adminClient = (key: string) => new OpenAI({ adminAPIKey: key, baseURL: server.baseURL, maxRetries: 0 });
  const hi = (model: string) => ({ model, messages: [{ role: "user" as const, content: "hi" }], max_completion_tokens: 2 });
  const trainFrom = (model: string) => other.fineTuning.jobs.create({ model, training_file: otherFile, hyperparameters: { n_epochs: 1, batch_size: 5 } });

  before(async () => {
    server = await startServer({
      projects: ["owner", "other"],
      admin: true,
      env: { OPENFT_EMBEDDED_WORKER: "true", OPENFT_DEVICE: "cpu", OMP_NUM_THREADS: "1", OPENFT_SERVING_MODE: "fp32", OPENFT_SERVING_THREADS: "1" },
    });
    await buildTinyModel("llama", path.join(server.env.OPENFT_MODELS_DIR!, "tiny-llama"));
    owner = server.client(server.projectKeys.owner);
    other = server.client(server.projectKeys.other);
    admin = adminClient(server.adminKey!);
    const file = await owner.files.create({ file: await toFile(jsonl(10), "t.jsonl"), purpose: "fine-tune" });
    otherFile = (await other.files.create({ file: await toFile(jsonl(10), "o.jsonl"), purpose: "fine-tune" })).id;
    ownerFile = file.id;
    const job = await owner.fineTuning.jobs.create({ model: "tiny-llama", training_file: file.id, hyperparameters: { n_epochs: 1, batch_size: 5 } });
    const done = await waitForStatus(owner, job.id, ["succeeded", "failed"], 300_000, 250);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    ownerModel = done.fine_tuned_model!;
    checkpoint = (await owner.fineTuning.jobs.checkpoints.list(job.id)).data[0]!.fine_tuned_model_checkpoint;
  });
  after(async () => server.dispose());

  test("only admin keys manage permissions, and admin keys call nothing else", async () => {
    const ownerAsAdmin = adminClient(server.projectKeys.owner!);
    await rejects(ownerAsAdmin.fineTuning.checkpoints.permissions.create(checkpoint, { project_ids: ["other"] }), OpenAI.PermissionDeniedError, /admin key/);
    await rejects(ownerAsAdmin.fineTuning.checkpoints.permissions.list(checkpoint), OpenAI.PermissionDeniedError);
    await rejects(adminClient(server.apiKey).fineTuning.checkpoints.permissions.list(checkpoint), OpenAI.PermissionDeniedError);
    const adminAsProject = server.client(server.adminKey);
    await rejects(adminAsProject.files.list(), OpenAI.PermissionDeniedError, /project key/);
    await rejects(adminAsProject.chat.completions.create(hi(checkpoint)), OpenAI.PermissionDeniedError);
    await rejects(admin.fineTuning.checkpoints.permissions.list("ft:tiny-llama:x::nope"), OpenAI.NotFoundError);
    await rejects(admin.fineTuning.checkpoints.permissions.create(checkpoint, { project_ids: ["no-such-project"] }), OpenAI.BadRequestError, /No such project/);
    await rejects(adminClient("sk-wrong-key-123456").fineTuning.checkpoints.permissions.list(checkpoint), OpenAI.AuthenticationError);
  });

  test("grant: the project trains from the checkpoint and chats with it; revoke: 404 again", async () => {
    await rejects(other.chat.completions.create(hi(checkpoint)), OpenAI.NotFoundError);
    await rejects(trainFrom(checkpoint), OpenAI.BadRequestError, /not available/);

    const raw = await admin.fineTuning.checkpoints.permissions.create(checkpoint, { project_ids: ["other"] }).asResponse();
    const granted = (await raw.json()) as { data: OpenAI.FineTuning.Checkpoints.PermissionCreateResponse[] };
    assertResponseMatches("post", "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions", 200, granted);
    // Granting again returns the same permission.
    const again = await admin.fineTuning.checkpoints.permissions.create(checkpoint, { project_ids: ["other"] });
    assert.deepEqual(again.data, granted.data);
    const perm = granted.data[0]!;
    assert.equal(perm.object, "checkpoint.permission");
    assert.match(perm.project_id, /^proj_/);
    const listed = await admin.fineTuning.checkpoints.permissions.list(checkpoint, { project_id: perm.project_id });
    assert.deepEqual(listed.data.map((p) => p.id), [perm.id]);
    const rawList = await admin.fineTuning.checkpoints.permissions.list(checkpoint, { order: "ascending", limit: 1 }).asResponse();
    assertResponseMatches("get", "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions", 200, await rawList.json());

    const reply = await other.chat.completions.create(hi(checkpoint));
    assert.equal(reply.model, checkpoint);
    assert.equal((await other.models.retrieve(checkpoint)).id, checkpoint);
    const job = await trainFrom(checkpoint);
    const done = await waitForStatus(other, job.id, ["succeeded", "failed"], 300_000, 250);
    assert.equal(done.status, "succeeded", JSON.stringify(done.error));
    assert.match(done.fine_tuned_model!, /^ft:tiny-llama:other:/);

    // Nothing else of the owner's: not its final model, files or jobs.
    await rejects(other.models.retrieve(ownerModel), OpenAI.NotFoundError);
    await rejects(other.chat.completions.create(hi(ownerModel)), OpenAI.NotFoundError);
    assert.ok(!(await other.models.list()).data.some((m) => m.id === ownerModel));
    assert.deepEqual((await other.files.list()).data.filter((f) => f.purpose === "fine-tune").map((f) => f.id), [otherFile]);
    assert.ok((await other.fineTuning.jobs.list()).data.every((j) => j.id === job.id));
    await rejects(other.models.delete(checkpoint), OpenAI.NotFoundError);

    const revoked = await admin.fineTuning.checkpoints.permissions.delete(perm.id, { fine_tuned_model_checkpoint: checkpoint });
    assert.deepEqual(revoked, { id: perm.id, object: "checkpoint.permission", deleted: true });
    assertResponseMatches("delete", "/v1/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions/{permission_id}", 200, revoked);
    await rejects(other.chat.completions.create(hi(checkpoint)), OpenAI.NotFoundError);
    await rejects(other.models.retrieve(checkpoint), OpenAI.NotFoundError);
    await rejects(trainFrom(checkpoint), OpenAI.BadRequestError, /not available/);
    await rejects(admin.fineTuning.checkpoints.permissions.delete(perm.id, { fine_tuned_model_checkpoint: checkpoint }), OpenAI.NotFoundError);
    // The model the project trained from it stays its own.
    assert.equal((await other.chat.completions.create(hi(done.fine_tuned_model!))).model, done.fine_tuned_model);
  });

  test("reinforcement and graders answer what is not supported", async () => {
    await rejects(
      owner.fineTuning.jobs.create({ model: "tiny-llama", training_file: ownerFile, method: { type: "reinforcement" } as never }),
      OpenAI.BadRequestError,
      /reinforcement/,
    );
    await rejects(owner.fineTuning.alpha.graders.run({ grader: { type: "string_check", name: "g", input: "a", reference: "a", operation: "eq" }, model_sample: "a" }), OpenAI.NotFoundError, /Graders .* not supported/);
    await rejects(owner.fineTuning.alpha.graders.validate({ grader: { type: "string_check", name: "g", input: "a", reference: "a", operation: "eq" } }), OpenAI.NotFoundError, /not supported/);
  });
});
