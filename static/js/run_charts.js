// The run page's system and optimizer charts beside Loss / Evaluation / Learning rate: gradient norm,
// throughput, process memory and (on GPU workers, once NVML points arrive) GPU utilisation and memory.
import { LiveChart } from "./charts.js";
import { $, fmtBytes, fmtNumber } from "./common.js";

const bytes = (v) => fmtBytes(v);

export function systemCharts() {
  const charts = {
    grad: new LiveChart($("#chart-grad"), {
      series: [{ name: "train/grad_norm", label: "grad norm", color: "#7c3aed" }],
    }),
    throughput: new LiveChart($("#chart-throughput"), {
      series: [
        { name: "train/tokens_per_s", label: "tokens/s", color: "#0d9488" },
        { name: "train/samples_per_s", label: "samples/s", color: "#d97706", scale: "samples" },
      ],
      scales: { y: {}, samples: { side: "right" } },
    }),
    memory: new LiveChart($("#chart-memory"), {
      series: [{ name: "system/memory_bytes", label: "memory", color: "#475569" }],
      scales: { y: { format: bytes, size: 80 } },
    }),
    gpu: new LiveChart($("#chart-gpu"), {
      series: [
        { name: "system/gpu_utilization", label: "GPU utilisation %", color: "#16a34a", scale: "pct" },
        { name: "system/gpu_memory_bytes", label: "GPU memory", color: "#2563eb", scale: "bytes" },
      ],
      scales: { pct: { range: [0, 100], format: (v) => `${fmtNumber(v, 3)}%` }, bytes: { side: "right", format: bytes, size: 80 } },
    }),
  };
  // Only GPU workers report NVML points: the card shows once the first one is drawn.
  const gpuCard = $("#gpu-card");
  new MutationObserver(() => { if (Number($("#chart-gpu").dataset.points) > 0) gpuCard.hidden = false; })
    .observe($("#chart-gpu"), { attributes: true, attributeFilter: ["data-points"] });
  return charts;
}

// Series names the charts above draw: what a finished run's page asks /metrics for.
export const SYSTEM_METRICS = ["train/grad_norm", "train/tokens_per_s", "train/samples_per_s", "system/memory_bytes",
  "system/gpu_utilization", "system/gpu_memory_bytes"];
