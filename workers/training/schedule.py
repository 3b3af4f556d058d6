"""The learning-rate schedule of a run (training.lr_scheduler): warmup over training.warmup_ratio of the
steps, then `linear` decay to zero, a half `cosine` to zero, or `constant`.

The shapes are transformers' own (get_scheduler). The loop sets the rate itself before every optimizer
step, so it asks for a plain function step → rate; the scheduler is built over a throwaway optimizer
and only its multiplier is used. Warmup counts from 1, so the first step trains (transformers' step 0
has rate 0) and `linear` stays exactly what runs before the setting had.
"""
from collections.abc import Callable

import torch
from transformers import get_scheduler

from app.runs.schemas import Training

# Our names → transformers' (its "constant" ignores warmup; ours warms up like the others).
TRANSFORMERS_NAMES = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def lr_schedule(training: Training, total_steps: int, warmup_steps: int | None = None) -> Callable[[int], float]:
    """The learning rate of optimizer step `step` (counted from 0) of `total_steps`; the warmup is
    training.warmup_ratio of them unless given."""
    warmup = round(training.warmup_ratio * total_steps) if warmup_steps is None else warmup_steps
    throwaway = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = get_scheduler(TRANSFORMERS_NAMES[training.lr_scheduler], throwaway,
                              num_warmup_steps=warmup, num_training_steps=total_steps)
    multiplier = scheduler.lr_lambdas[0]
    peak = training.learning_rate

    def lr_at(step: int) -> float:
        return peak * multiplier(step + 1 if step < warmup else step)

    return lr_at
