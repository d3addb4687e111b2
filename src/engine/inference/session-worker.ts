// Worker-thread entry: owns the Engine (session, KV cache, adapters), because session.run blocks
// the thread that calls it (onnxruntime-node's run is synchronous), and the HTTP loop must not wait. Requests run one at a time, in arrival order.
import { parentPort, workerData } from "node:worker_threads";
import { Engine } from "./engine.js";
import type { Reply, Request, WorkerInit } from "./protocol.js";

const port = parentPort!;
const init = workerData as WorkerInit;
const post = (reply: Reply, transfer: ArrayBuffer[] = []) => port.postMessage(reply, transfer);

async function handle(engine: Engine, req: Request): Promise<{ value: unknown; transfer: ArrayBuffer[] }> {
  switch (req.op) {
    case "loadAdapter":
      await engine.loadAdapter(req.key, req.dir);
      return { value: null, transfer: [] };
    case "unloadAdapter":
      engine.unloadAdapter(req.key);
      return { value: null, transfer: [] };
    case "step": {
      const logits = await engine.step(req.items);
      return { value: logits, transfer: logits.map((l) => l.buffer as ArrayBuffer) };
    }
    case "fork":
      engine.fork(req.src, req.dst);
      return { value: null, transfer: [] };
    case "free":
      engine.free(req.seq);
      return { value: null, transfer: [] };
    case "close":
      await engine.close();
      return { value: null, transfer: [] };
  }
}

try {
  const engine = await Engine.open(init.modelDir, init.opts, (done, total) => post({ type: "progress", done, total }));
  let queue: Promise<void> = Promise.resolve();
  port.on("message", (req: Request) => {
    queue = queue.then(async () => {
      try {
        const { value, transfer } = await handle(engine, req);
        post({ type: "result", id: req.id, value, adapters: engine.adapterStats }, transfer);
        if (req.op === "close") port.close();
      } catch (err) {
        post({ type: "error", id: req.id, message: (err as Error).message });
      }
    });
  });
  post({ type: "ready", vocabSize: engine.config.vocab, contextLength: engine.config.contextLength });
} catch (err) {
  post({ type: "fatal", message: (err as Error).message });
}
