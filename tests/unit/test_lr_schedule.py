"""training.lr_scheduler: the schedule factory's shapes, and the `train/lr` curve a tiny run reports."""
import math

import pytest

from app.runs.schemas import RunCreate, Training
from tests.tiny_models import make_tiny_bert, sentiment_rows
from workers.training.reporting import MemoryReporter
from workers.training.schedule import lr_schedule


def _curve(name: str, total: int = 20, warmup_ratio: float = 0.2, lr: float = 1e-3) -> list[float]:
    at = lr_schedule(Training(learning_rate=lr, warmup_ratio=warmup_ratio, lr_scheduler=name), total)
    return [at(s) for s in range(total)]


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_every_schedule_warms_up_linearly_from_the_first_step(name):
    curve = _curve(name)  # 4 warmup steps of 20
    assert curve[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])  # step 0 already trains


def test_linear_is_the_rate_runs_had_before_the_setting():
    total, warmup, lr = 20, 4, 1e-3
    before = [lr * (s + 1) / warmup if s < warmup else lr * (total - s) / (total - warmup) for s in range(total)]
    assert _curve("linear") == pytest.approx(before)
    assert Training().lr_scheduler == "linear"  # the default


def test_cosine_follows_half_a_cosine_to_zero():
    curve = _curve("cosine")
    decay = curve[4:]
    expected = [1e-3 * 0.5 * (1 + math.cos(math.pi * (s - 4) / 16)) for s in range(4, 20)]
    assert decay == pytest.approx(expected)
    mid = curve[12]  # halfway through the decay: half the peak, where linear is too but the ends differ
    assert mid == pytest.approx(5e-4)
    assert curve[6] > _curve("linear")[6]  # cosine stays higher early in the decay ...
    assert curve[18] < _curve("linear")[18]  # ... and lower late


def test_constant_stays_at_the_peak_after_warmup():
    assert _curve("constant")[4:] == pytest.approx([1e-3] * 16)


def test_no_warmup_starts_at_the_peak():
    for name in ("linear", "cosine", "constant"):
        assert _curve(name, warmup_ratio=0.0)[0] == pytest.approx(1e-3)


def test_an_unknown_schedule_is_refused_by_the_config():
    with pytest.raises(ValueError, match="lr_scheduler"):
        Training.model_validate({"lr_scheduler": "exponential"})


@pytest.fixture
def tasks(peftlab_env):
    from workers import tasks  # after the test settings: the Celery app reads them on import

    return tasks


@pytest.mark.parametrize("name", ["cosine", "constant"])
def test_a_tiny_run_reports_its_schedule_as_train_lr(tasks, tmp_path, name):
    source = str(make_tiny_bert(tmp_path / "bert"))
    config = RunCreate.model_validate({
        "dataset_id": 1, "base_model": "tiny", "task": "classification", "eval_fraction": 0.2,
        "columns": {"text": "text", "label": "label"}, "method": {"type": "lora", "r": 4},
        "training": {"learning_rate": 0.01, "max_steps": 10, "batch_size": 8, "eval_every": 100, "max_length": 32,
                     "warmup_ratio": 0.2, "lr_scheduler": name}})
    reporter = MemoryReporter()
    tasks.fine_tune(config, sentiment_rows(60), None, source, reporter,
                    artifact_dir=lambda kind: tmp_path / "out" / kind)
    lrs = [v for _, v in sorted(reporter.series("train/lr"))]
    assert len(lrs) == 10
    assert lrs[:2] == pytest.approx([0.005, 0.01])  # two warmup steps
    if name == "constant":
        assert lrs[2:] == pytest.approx([0.01] * 8)
    else:
        assert lrs[2:] == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi * (s - 2) / 8)) for s in range(2, 10)])
