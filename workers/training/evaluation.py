"""Evaluation: classification loss / accuracy / macro-F1 with per-row predictions, causal-LM loss
(mean over response tokens) and perplexity. Also the forward + loss both training and eval use."""
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from workers.training.data import IGNORE_INDEX, Batch, Example, collate
from workers.training.precision import Precision, resolve_precision


@dataclass
class EvalResult:
    metrics: dict[str, float]  # classification: loss, accuracy, f1; causal_lm: loss, perplexity
    # classification only, in the order of the examples given: row, label id, predicted id, probs
    predictions: list[dict] | None = None


def autocast(device: torch.device, precision: Precision | None = None):
    """The run's autocast (training.precision); without one, `auto`'s: bf16 or fp16 on CUDA, fp32 on the CPU."""
    return (precision or resolve_precision("auto", device)).autocast()


def batch_loss(model: nn.Module, batch: Batch, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss over the batch's targets, logits). Summed, so callers can average over exactly
    the targets of a whole optimizer step or eval set, however they are split into batches."""
    logits = model(**batch.inputs).logits
    if task == "classification":
        return F.cross_entropy(logits.float(), batch.labels, reduction="sum"), logits
    # Causal LM: position t predicts token t+1; IGNORE_INDEX (prompt, padding) carries no loss.
    shifted, targets = logits[:, :-1].flatten(0, 1), batch.labels[:, 1:].flatten()
    if torch.is_grad_enabled() and shifted.shape[-1] >= CHUNKED_VOCAB and shifted.shape[0] > CE_CHUNK:
        return chunked_cross_entropy(shifted, targets), logits
    return _summed_cross_entropy(shifted, targets), logits


CHUNKED_VOCAB = 32_768  # from this vocabulary size on, the fp32 copy of all logits would dominate memory
CE_CHUNK = 2048  # positions per chunk of chunked_cross_entropy


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")


def chunked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The summed cross-entropy of (positions, vocab) logits, CE_CHUNK positions at a time, each chunk
    checkpointed: the backward recomputes a chunk's fp32 log-softmax instead of keeping all of them (for
    8 x 1024 positions over 128k tokens that is 4 GiB not held). Same value and gradient as one call."""
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, logits.shape[0], CE_CHUNK):
        total = total + checkpoint(_summed_cross_entropy, logits[start:start + CE_CHUNK],
                                   targets[start:start + CE_CHUNK], use_reentrant=False)
    return total


def macro_f1(y_true: torch.Tensor, y_pred: torch.Tensor, num_classes: int) -> float:
    """Mean F1 over the classes that occur in the truth or the predictions (sklearn's 'macro')."""
    true_count = torch.bincount(y_true, minlength=num_classes)
    pred_count = torch.bincount(y_pred, minlength=num_classes)
    tp = torch.bincount(y_true[y_true == y_pred], minlength=num_classes)
    denom = true_count + pred_count  # = 2·tp + fp + fn
    present = denom > 0
    f1 = 2 * tp[present].double() / denom[present].double()
    return float(f1.mean()) if present.any() else 0.0


@torch.inference_mode()
def evaluate(model: nn.Module, examples: list[Example], *, task: str, pad_id: int, batch_size: int,
             device: torch.device, precision: Precision | None = None) -> EvalResult | None:
    if not examples:
        return None
    was_training = model.training
    model.eval()
    # Length-sorted batches pad far less; results go back to the examples' order at the end.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    loss_sum = torch.zeros((), device=device)
    targets = 0
    all_logits = []
    for start in range(0, len(order), batch_size):
        batch = collate([examples[i] for i in order[start:start + batch_size]], pad_id).to(device)
        with autocast(device, precision):
            loss, logits = batch_loss(model, batch, task)
        loss_sum += loss
        targets += batch.num_targets
        if task == "classification":
            all_logits.append(logits.float())
    model.train(was_training)

    mean_loss = float(loss_sum) / max(1, targets)  # the one sync of the evaluation
    if task != "classification":
        return EvalResult(metrics={"loss": mean_loss, "perplexity": _perplexity(mean_loss)})

    logits = torch.empty_like(torch.cat(all_logits))
    logits[torch.tensor(order, device=device)] = torch.cat(all_logits)
    probs = logits.softmax(-1)
    pred = probs.argmax(-1).cpu()
    truth = torch.tensor([e.target for e in examples])
    metrics = {"loss": mean_loss, "accuracy": float((pred == truth).double().mean()),
               "f1": macro_f1(truth, pred, logits.shape[-1])}
    predictions = [{"row": e.row, "label_id": e.target, "pred_id": p, "probs": pr}
                   for e, p, pr in zip(examples, pred.tolist(), probs.cpu().tolist())]
    return EvalResult(metrics=metrics, predictions=predictions)


def _perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")
