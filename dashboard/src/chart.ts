// The live loss chart: train and validation loss per step from a job's metrics events, drawn by
// uPlot (loaded from /dashboard/uPlot.iife.min.js, bundled from npm). The plotted series stay on
// window.openftDashboard.loss so they can be read back (the browser test compares them with the API).
interface UPlot {
  setData(data: (number | null)[][]): void;
  setSize(size: { width: number; height: number }): void;
  destroy(): void;
  data: (number | null)[][];
}
declare const uPlot: new (opts: object, data: (number | null)[][], target: HTMLElement) => UPlot;

export interface MetricsPoint {
  step: number;
  train_loss?: number;
  valid_loss?: number;
}

declare global {
  interface Window {
    openftDashboard?: { loss: { steps: number[]; train: (number | null)[]; valid: (number | null)[] } };
  }
}

export class LossChart {
  private plot: UPlot | undefined;
  private readonly onResize = () => this.plot?.setSize(this.size());

  constructor(private readonly el: HTMLElement) {
    window.addEventListener("resize", this.onResize);
  }

  private size() {
    return { width: Math.max(240, this.el.clientWidth), height: 260 };
  }

  update(points: MetricsPoint[]): void {
    const sorted = [...points].sort((a, b) => a.step - b.step);
    const steps = sorted.map((p) => p.step);
    const train = sorted.map((p) => p.train_loss ?? null);
    const valid = sorted.map((p) => p.valid_loss ?? null);
    window.openftDashboard = { loss: { steps, train, valid } };
    const data = [steps, train, valid];
    if (this.plot) return this.plot.setData(data);
    this.plot = new uPlot({
      ...this.size(),
      title: "Loss per step",
      scales: { x: { time: false } },
      // Whole steps only on the x axis.
      axes: [{ label: "step", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, { label: "loss" }],
      series: [
        { label: "step" },
        { label: "train loss", stroke: "#2563eb", width: 2, spanGaps: true },
        { label: "validation loss", stroke: "#dc2626", width: 2, spanGaps: true, points: { show: true } },
      ],
    }, data, this.el);
  }

  destroy(): void {
    window.removeEventListener("resize", this.onResize);
    this.plot?.destroy();
  }
}
