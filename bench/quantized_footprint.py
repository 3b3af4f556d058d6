"""Weight memory of a base model loaded in fp32, bf16, 8-bit and 4-bit (training.precision and
training.quantization), through the worker's load_base_model, on a random Llama built from its config.

    PYTHONPATH=$PWD .venv/bin/python bench/quantized_footprint.py [--hidden 1024] [--layers 8] [--device cpu]

For each setting: transformers' get_memory_footprint (parameters and buffers as stored), the share of
the fp32 figure, and how many linear layers bitsandbytes holds. The embeddings and the LM head stay
unquantised (as in QLoRA), so on a small model they dominate the 4-bit figure. Prints one JSON line.
"""
import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from workers.model_loading import load_base_model  # noqa: E402
from workers.training.quantization import quantised_linear_count  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    config = LlamaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                         num_key_value_heads=args.hidden // 128, intermediate_size=args.hidden * 11 // 4,
                         vocab_size=args.vocab, tie_word_embeddings=False)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(tmp, safe_serialization=True)
        results = {}
        for name, dtype, kind in [("fp32", torch.float32, None), ("bf16", torch.bfloat16, None),
                                  ("8bit", torch.bfloat16, "8bit"), ("4bit", torch.bfloat16, "4bit")]:
            model = load_base_model(tmp, "causal_lm", dtype=dtype, quantization=kind, device=device)
            if kind is None:
                model.to(device)
            results[name] = {"bytes": model.get_memory_footprint(), "quantised_linears": quantised_linear_count(model)}
            del model
    fp32 = results["fp32"]["bytes"]
    for r in results.values():
        r["share_of_fp32"] = round(r["bytes"] / fp32, 3)
    params = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    print(json.dumps({"device": str(device), "parameters": params, "hidden": args.hidden, "layers": args.layers,
                      "vocab": args.vocab, "footprint": results}))


if __name__ == "__main__":
    main()
