// A worker process running the TrainerDouble (a test double), so tests can SIGKILL a worker.
// Usage: node worker-double-main.js API_URL TOKEN STEP_MS
import pino from "pino";
import { ProtocolClient } from "../../src/engine/worker/protocol-client.js";
import { Worker } from "../../src/engine/worker/worker.js";
import { TrainerDouble } from "./trainer-double.js";

const [url, token, stepMs] = process.argv.slice(2);
const worker = new Worker({
  client: new ProtocolClient(url!, token!),
  runner: new TrainerDouble({ stepMs: Number(stepMs ?? 20), onStep: (jobId, step) => process.stdout.write(`step ${jobId} ${step}\n`) }),
  log: pino({ level: "warn" }),
  claimWaitSeconds: 2,
});
worker.start();
process.on("SIGTERM", () => void worker.stop().then(() => process.exit(0)));
