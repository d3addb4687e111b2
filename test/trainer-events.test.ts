// The trainer's stdout protocol has one table (openft_trainer/events.json): the Python writer
// checks every line against it (protocol.py), the worker parses every line with schemas built from
// it, and READS lists what the worker relies on. These fail when the three drift apart.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";
import { trainerPaths } from "../src/engine/worker/start.js";
import { eventSchemas, loadEventTable, parseTrainerLine, READS } from "../src/engine/worker/trainer-events.js";

const { python, trainerPath } = trainerPaths(undefined);
const table = loadEventTable(trainerPath);

test("every event the table declares is one the worker reads, with the fields and kinds it reads", { timeout: 10_000 }, () => {
  assert.deepEqual(Object.keys(table).sort(), Object.keys(READS).sort());
  for (const [type, fields] of Object.entries(READS)) {
    for (const [name, kind] of Object.entries(fields)) assert.equal(table[type]![name], kind, `${type}.${name}`);
  }
});

test("the schemas built from the table accept what the Python writer emits and refuse what it refuses", { timeout: 120_000 }, async () => {
  // one event of each type through the writer's own check (protocol.Protocol.emit)
  const code = `
import io, json, sys
from openft_trainer.protocol import Protocol
out = io.StringIO(); p = Protocol(out)
p.emit("started", total_steps=4, n_examples=8, device="cpu", trainable_params=10, start_step=0, n_validation_examples=0, learning_rate=2e-4, quantization="none", processes=2, sharding="none")
p.emit("metrics", step=1, total_steps=4, epoch=1, train_loss=float("nan"), train_mean_token_accuracy=0.5, tokens=10, steps_per_second=1.0)
p.emit("checkpoint", step=2, epoch=1, dir="/x", files=["a"], metrics={"step": 2})
p.emit("stopped", step=2)
p.emit("done", adapter_dir="/x", files=["a"], trained_tokens=10)
p.emit("error", code="internal_error", message="m", rank=1)
for bad in ({"step": 1, "extra": 1}, {}):
    try:
        p.emit("stopped", **bad)
        sys.exit("the writer accepted an event outside the table")
    except ValueError:
        pass
print(out.getvalue(), end="")`;
  const { stdout } = await promisify(execFile)(python, ["-c", code], { env: { ...process.env, PYTHONPATH: trainerPath } });
  const schemas = eventSchemas(table);
  const lines = stdout.trim().split("\n");
  assert.equal(lines.length, Object.keys(table).length);
  for (const line of lines) assert.ok("event" in parseTrainerLine(schemas, line), line);
  assert.ok("problem" in parseTrainerLine(schemas, '{"type":"stopped","step":1,"extra":1}'));
  assert.ok("problem" in parseTrainerLine(schemas, '{"type":"stopped"}'));
  assert.ok("problem" in parseTrainerLine(schemas, '{"type":"paused","step":1}'));
  assert.ok("problem" in parseTrainerLine(schemas, "not json"));
});
