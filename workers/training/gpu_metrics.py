"""GPU utilisation and device memory over time, from NVML (package nvidia-ml-py, module pynvml).

The loop asks `GpuSampler.sample()` for points each time it reports throughput. On a CPU device,
or where NVML or its driver library is missing, the sampler is off and returns nothing: training
never fails for want of system metrics.
"""
import logging

import torch

log = logging.getLogger(__name__)

UTILIZATION = "system/gpu_utilization"  # percent of the last sample period a kernel ran (0..100)
MEMORY = "system/gpu_memory_bytes"  # device memory in use, by every process on the device


class GpuSampler:
    def __init__(self, device: torch.device):
        self._nvml = None
        self._handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml  # lazily: servers and CPU workers never load the NVML library

            pynvml.nvmlInit()
            self._handle = _handle_for(pynvml, device)
            self._nvml = pynvml
        except Exception as e:  # noqa: BLE001 — no driver library, no permission, old driver …
            log.info("GPU metrics are off: NVML is not usable here (%s)", e)

    @property
    def enabled(self) -> bool:
        return self._handle is not None

    def sample(self) -> list[tuple[str, float]]:
        """[(metric name, value)] now; empty when off. A failing read turns the sampler off."""
        if self._handle is None:
            return []
        try:
            rates = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
        except Exception as e:  # noqa: BLE001 — e.g. the GPU fell off the bus: keep training
            log.warning("GPU metrics stopped: NVML read failed (%s)", e)
            self._handle = None
            return []
        return [(UTILIZATION, float(rates.gpu)), (MEMORY, float(memory.used))]


def _handle_for(pynvml, device: torch.device):
    """NVML numbers every GPU of the host while CUDA numbers only the visible ones (CUDA_VISIBLE_DEVICES),
    so find the device by its UUID, and by index only where torch does not tell the UUID."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    if uuid is not None:
        text = str(uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
    return pynvml.nvmlDeviceGetHandleByIndex(index)
