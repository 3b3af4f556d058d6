"""peftlab's Python API for what a run produced: load any run's downloaded adapter directory beside
its base model, and predict with it.

    import peftlab
    model, tokenizer, metadata = peftlab.load("run-12-adapter/")   # base: a path or hub id, if not minilm-l6
    peftlab.predict(model, tokenizer, metadata, ["a wonderful film"])
    # → [{"label": "pos", "probs": {"neg": 0.03, "pos": 0.97}}]

Works for every method (LoRA and the other peft methods, Adapters, AdapterFusion, full fine-tuning):
the directory's peftlab.json says which one, and workers.training.checkpoints.load_trained does the rest.
"""
from collections.abc import Sequence
from pathlib import Path

# torch and the training code load on first use, so `import peftlab.client` (the command line's HTTP
# client) stays quick on a machine that only talks to a server.
__all__ = ["load", "predict"]


def load(adapter_dir: str | Path, base: str | Path | None = None):
    """(model in eval mode, tokenizer, metadata) from a run's adapter directory.

    `base` is the base model's local directory or hub id. It may be left out for runs on the
    bundled all-MiniLM-L6-v2 (base_model "minilm-l6"); other runs name a server-side registry
    entry, which this machine cannot resolve, so they need it.
    """
    from app.models.bundled import BUNDLED_ID, bundled_dir
    from workers.training.checkpoints import load_trained, read_metadata

    adapter_dir = Path(adapter_dir)
    if base is None:
        base_model = read_metadata(adapter_dir)["base_model"]
        if base_model != BUNDLED_ID:
            raise ValueError(f"this run was trained on base model {base_model!r}: pass base= its local directory "
                             "or hub id")
        base = bundled_dir()
    return load_trained(adapter_dir, str(base))


def predict(model, tokenizer, metadata: dict, texts: Sequence[str | tuple[str, str] | list[dict]], *,
            max_new_tokens: int = 32) -> list[dict]:
    """classification: [{label, probs: {label: p}}] per text ((text, text_pair) tuples for pair tasks);
    causal_lm: [{text: the greedy continuation}] per prompt; chat runs (columns.messages or
    columns.chat_template): [{text: the next assistant turn}] per text (one user turn) or conversation
    (a list of {role, content} turns)."""
    import torch

    with torch.inference_mode():
        return _predict(model, tokenizer, metadata, texts, max_new_tokens)


def _predict(model, tokenizer, metadata: dict, texts, max_new_tokens: int) -> list[dict]:
    if metadata["task"] == "classification":
        inputs = tokenizer(list(texts), padding=True, truncation=True, max_length=metadata["max_length"],
                           return_tensors="pt")
        probs = model(**inputs).logits.float().softmax(-1).tolist()
        labels = metadata["labels"]
        return [{"label": labels[max(range(len(p)), key=p.__getitem__)], "probs": dict(zip(labels, p))} for p in probs]
    from workers.training.chat import chat_reply, is_chat

    if is_chat(metadata.get("columns") or {}):  # chat runs: the next assistant turn, in their chat template
        return [{"text": chat_reply(model, tokenizer, metadata, conversation, device=next(model.parameters()).device,
                                    max_new_tokens=max_new_tokens, do_sample=False)} for conversation in texts]
    results = []
    for text in texts:  # one at a time: no padding side to get right for decoder-only models
        inputs = tokenizer(text, return_tensors="pt")
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
        results.append({"text": tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)})
    return results
