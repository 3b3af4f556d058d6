"""Running out of memory fails a run with what to lower, on the GPU and on the CPU alike."""
import pytest
import torch


@pytest.fixture
def tasks(peftlab_env):
    from workers import tasks

    return tasks


@pytest.mark.parametrize("error, where", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), "GPU"),
    (MemoryError(), "CPU"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 4000000000 bytes. Error code 12 (Cannot allocate memory)"), "CPU"),
])
def test_out_of_memory_says_what_to_lower(tasks, error, where):
    message = tasks.failure_reason(error)
    assert message.startswith(f"out of {where} memory: lower training.batch_size"), message
    assert "training.gradient_accumulation" in message and "training.max_length" in message


def test_out_of_memory_is_found_behind_the_error_it_caused(tasks):
    """Libraries re-raise: what counts is whether memory ran out somewhere down the chain."""
    try:
        try:
            raise MemoryError()
        except MemoryError as e:
            raise ValueError("collate failed") from e
    except ValueError as wrapped:
        assert tasks.failure_reason(wrapped).startswith("out of CPU memory")
    assert tasks.out_of_memory(RuntimeError("boom")) is None
