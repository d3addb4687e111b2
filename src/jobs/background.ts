// The API process's background duties: validate new jobs' files, and put jobs whose worker
// died back in the queue. Safe on every replica: both claim their rows with SKIP LOCKED.
import type { Logger } from "pino";
import type { BlobStore } from "../storage/blob-store.js";
import type { Db } from "../storage/db.js";
import type { BaseModels } from "./base-models.js";
import { reapExpiredLeases } from "./queue.js";
import { drainValidations } from "./validation-runner.js";

export interface Background {
  /** Validate now (called when a job is created) rather than at the next tick. */
  wake(): void;
  stop(): Promise<void>;
}

export function startBackground(
  deps: { db: Db; blobs: BlobStore; baseModels: BaseModels; log: Logger; owner: string; onQueued: () => void },
  everyMs = 1000,
): Background {
  let running: Promise<void> | undefined;
  let again = false;
  let stopped = false;
  const tick = () => {
    if (stopped) return;
    if (running) {
      again = true;
      return;
    }
    running = (async () => {
      try {
        if ((await drainValidations(deps)) > 0) deps.onQueued();
        const reaped = await reapExpiredLeases(deps.db);
        if (reaped.requeued + reaped.failed > 0) deps.log.warn(reaped, "reaped jobs with lapsed leases");
        if (reaped.requeued > 0) deps.onQueued();
      } catch (err) {
        deps.log.error({ err }, "background tick failed");
      }
    })().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        tick();
      }
    });
  };
  const timer = setInterval(tick, everyMs);
  timer.unref();
  tick();
  return {
    wake: tick,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
