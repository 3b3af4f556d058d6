"""The NVML sampler is off, silently, where there is no GPU or no NVML driver library."""
import logging

import torch

from workers.training.gpu_metrics import GpuSampler


def test_a_cpu_device_has_no_gpu_metrics():
    sampler = GpuSampler(torch.device("cpu"))
    assert not sampler.enabled
    assert sampler.sample() == []


def test_a_cuda_device_without_a_usable_nvml_is_skipped(caplog):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("this host has a GPU; the GPU check runs the sampler for real")
    with caplog.at_level(logging.INFO, logger="workers.training.gpu_metrics"):
        sampler = GpuSampler(torch.device("cuda"))  # NVML's library (libnvidia-ml) is absent here
    assert not sampler.enabled
    assert sampler.sample() == []
    assert "GPU metrics are off" in caplog.text
