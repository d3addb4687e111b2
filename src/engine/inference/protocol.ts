// Messages between runtime.ts (main thread) and session-worker.ts (the thread that owns the session).
import type { AdapterStats, EngineOptions, StepItem } from "./engine.js";

export interface WorkerInit {
  modelDir: string;
  opts: EngineOptions;
}

export type Request =
  | { id: number; op: "loadAdapter"; key: string; dir: string }
  | { id: number; op: "unloadAdapter"; key: string }
  | { id: number; op: "step"; items: StepItem[] }
  | { id: number; op: "fork"; src: number; dst: number }
  | { id: number; op: "free"; seq: number }
  | { id: number; op: "close" };

export type Reply =
  | { type: "ready"; vocabSize: number; contextLength: number }
  | { type: "fatal"; message: string }
  | { type: "progress"; done: number; total: number }
  | { type: "result"; id: number; value: unknown; adapters: AdapterStats }
  | { type: "error"; id: number; message: string };
