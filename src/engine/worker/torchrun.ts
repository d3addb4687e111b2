// The trainer's processes: `torchrun --standalone --nproc-per-node N -m openft_trainer SPEC`
// (PyTorch's own launcher; it gives each process its RANK/WORLD_SIZE and a rendezvous on a free
// local port), stopping them, and telling which of them failed and how its log ends.
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";

const TAIL = 4000;

export function torchrunArgs(processes: number, specFile: string): string[] {
  // --tee 2: every process's stderr reaches ours prefixed "[default<rank>]:", so each one's log
  // tail is kept apart; stdout (rank 0's events) passes through untouched
  return ["-m", "torch.distributed.run", "--standalone", `--nproc-per-node=${processes}`, "--tee=2", "-m", "openft_trainer", specFile];
}

/** The number of CUDA devices the trainer's Python sees (0 without CUDA or torch). */
export async function visibleGpus(python: string, env: Readonly<Record<string, string | undefined>>): Promise<number> {
  try {
    const { stdout } = await promisify(execFile)(python, ["-c", "import torch; print(torch.cuda.device_count())"], { env, timeout: 120_000 });
    return Number.parseInt(stdout.trim(), 10) || 0;
  } catch {
    return 0;
  }
}

/**
 * SIGTERM to the training processes themselves (torchrun's children), so that each finishes its
 * step and they checkpoint together; torchrun then exits as they do. (Signalled itself, torchrun
 * would pass the signal on but kill them 30 s later, which a long step or checkpoint can outlast.)
 * Before the processes exist, torchrun itself.
 */
export async function stopRanks(torchrunPid: number | undefined, fallback: () => void): Promise<void> {
  if (torchrunPid === undefined) return fallback();
  const children = await readFile(`/proc/${torchrunPid}/task/${torchrunPid}/children`, "utf8").catch(() => "");
  const pids = children.split(/\s+/).filter(Boolean).map(Number);
  if (pids.length === 0) return fallback();
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
}

/** The last TAIL characters of each process's stderr, and of torchrun's own. */
export class RankLogs {
  private readonly tails = new Map<number, string>();
  private agent = "";
  private partial = "";

  write(chunk: string): void {
    const lines = (this.partial + chunk).split("\n");
    this.partial = lines.pop() ?? "";
    for (const line of lines) {
      const m = /^\[default(\d+)\]:(.*)$/.exec(line);
      if (m) this.tails.set(Number(m[1]), ((this.tails.get(Number(m[1])) ?? "") + m[2] + "\n").slice(-TAIL));
      else this.agent = (this.agent + line + "\n").slice(-2 * TAIL);
    }
  }

  tail(rank: number): string {
    return (this.tails.get(rank) ?? "").trim();
  }

  get launcher(): string {
    return (this.agent + this.partial).trim();
  }
}

export interface RankFailure {
  readonly rank: number;
  readonly exitCode: number;
}

/**
 * The processes torchrun's failure summary names, the first observed failure first. A process a
 * signal other than torchrun's own SIGTERM ended (the OOM killer, an operator) counts as the cause
 * even when another process's collective noticed first.
 */
export function failedRanks(launcherLog: string): RankFailure[] {
  const found: RankFailure[] = [];
  const root = launcherLog.lastIndexOf("Root Cause");
  const re = /rank\s*:\s*(\d+) \(local_rank: \d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)/g;
  for (const m of launcherLog.matchAll(re)) {
    const f = { rank: Number(m[1]), exitCode: Number(m[2]) };
    if (root >= 0 && m.index! > root) found.unshift(f);
    else found.push(f);
  }
  const killed = found.findIndex((f) => f.exitCode < 0 && f.exitCode !== -15);
  return killed > 0 ? [found[killed]!, ...found.filter((_, i) => i !== killed)] : found;
}

const SIGNALS: Record<number, string> = { 6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 15: "SIGTERM" };

export function describeExit(exitCode: number): string {
  return exitCode < 0 ? `was killed by ${SIGNALS[-exitCode] ?? `signal ${-exitCode}`}` : `exited with code ${exitCode}`;
}
