"""training.packing (causal LM): several examples share one row, without padding between them.

A batch's examples are packed first-fit-decreasing into rows of at most `capacity` tokens. Inside a
row the position ids restart at 0 for each example and no attention mask is passed: transformers
then reads the example boundaries from the position ids (a block-diagonal causal mask for SDPA and
eager attention, variable-length kernels for flash attention), so attention never crosses an
example. Only the last row's end is padded; the padding is its own "example" (positions from 0,
no labels), so it never touches the real ones.

transformers only reads the boundaries when the forward has no cache, so `prepare_for_packing` turns
the model's cache off (a training forward never reuses one).

The first label of every packed example is ignored: after the causal shift it would be predicted by
the previous example's last token (unpacked, position 0 is never a target either).
"""
from collections.abc import Callable, Sequence

import torch
from torch import nn
from transformers import PreTrainedModel

from workers.training.data import IGNORE_INDEX, Batch, Example


def pack(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into rows: first-fit decreasing, each row's lengths summing to at most `capacity`
    (an example longer than `capacity` gets a row of its own)."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([i])
            room.append(capacity - lengths[i])
        else:
            rows[row].append(i)
            room[row] -= lengths[i]
    return rows


def collate_packed(examples: Sequence[Example], pad_id: int, capacity: int) -> Batch:
    """The examples packed into rows of up to `capacity` tokens: input_ids and position_ids (no attention mask)."""
    layout = pack([len(e.input_ids) for e in examples], capacity)
    ids, positions, labels = [], [], []
    for row in layout:
        row_ids, row_pos, row_labels = [], [], []
        for i in row:
            e = examples[i]
            row_ids += e.input_ids
            row_pos += range(len(e.input_ids))
            row_labels += [IGNORE_INDEX] + list(e.target[1:])
        ids.append(row_ids)
        positions.append(row_pos)
        labels.append(row_labels)
    longest = max(len(r) for r in ids)
    for row_ids, row_pos, row_labels in zip(ids, positions, labels):
        fill = longest - len(row_ids)
        row_ids += [pad_id] * fill
        row_pos += range(fill)
        row_labels += [IGNORE_INDEX] * fill
    return Batch(inputs={"input_ids": torch.tensor(ids), "position_ids": torch.tensor(positions)},
                 labels=torch.tensor(labels), rows=[e.row for e in examples],
                 num_tokens=sum(len(e.input_ids) for e in examples),
                 num_targets=sum(e.num_targets for e in examples))


def packed_collate(capacity: int) -> Callable[[Sequence[Example], int], Batch]:
    """A collate function (examples, pad_id) → Batch that packs into rows of `capacity` tokens."""
    return lambda examples, pad_id: collate_packed(examples, pad_id, capacity)


def prepare_for_packing(model: nn.Module) -> None:
    """Turn off the KV cache of every transformers model inside `model` (a method's wrapper around it):
    with a cache, transformers ignores the position-id boundaries and attention would cross examples."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            module.config.use_cache = False


def resolve_packing(requested: bool | None, task: str, method_config, model: nn.Module) -> bool:
    """training.packing as the run uses it: an explicit choice stands (the server refused the impossible
    ones); null packs causal_lm runs without virtual tokens when `packs_exactly(model)`."""
    if requested is not None:
        return requested
    if task != "causal_lm" or getattr(method_config, "num_virtual_tokens", 0):
        return False
    return packs_exactly(model)


@torch.no_grad()
def packs_exactly(model: nn.Module) -> bool:
    """Whether `model` keeps packed examples apart: the logits of a short sequence are the same alone and
    packed after another one. flash_attention_2 reads the boundaries from the position ids by design
    (and runs on a GPU only, where the model is not yet); SDPA and eager attention get a block-diagonal
    mask from transformers only in architectures built on its masking utilities, so those are probed."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    if getattr(config, "_attn_implementation", None) == "flash_attention_2":
        return True
    vocab = model.get_input_embeddings().num_embeddings
    generator = torch.Generator().manual_seed(0)
    first, second = (torch.randint(vocab, (1, n), generator=generator) for n in (6, 5))
    device = next(model.parameters()).device
    first, second = first.to(device), second.to(device)
    was_training, use_cache = model.training, getattr(config, "use_cache", None)
    model.eval()
    prepare_for_packing(model)
    try:
        alone = model(input_ids=second).logits[0].float()
        positions = torch.cat([torch.arange(6), torch.arange(5)]).unsqueeze(0).to(device)
        packed = model(input_ids=torch.cat([first, second], dim=1), position_ids=positions).logits[0, 6:].float()
    except Exception:  # noqa: BLE001 — an architecture that refuses position ids without a mask cannot pack
        return False
    finally:
        model.train(was_training)
        if use_cache is not None:
            config.use_cache = use_cache
    tolerance = 1e-3 + 1e-2 * float(alone.abs().max())  # bf16 weights round; a crossed boundary moves far more
    return float((packed - alone).abs().max()) <= tolerance
