"""Prompt-tuning (Lester et al. 2021) through peft: n trainable virtual-token embeddings (n·d
parameters) prepended to the input embeddings of a frozen model; the classification head trains
too (peft's modules_to_save).

Also home of `VirtualTokenModel`, the wrapper Prompt- and P-tuning share: peft prepends the
virtual tokens as extra input positions, and two consumers of the outputs must not see them.
"""
from pathlib import Path

import torch
import torch.nn.functional as F
from peft import PeftConfig, PeftModel, PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

from app.methods.prompt import PromptMethod
from workers.methods.base import BuildContext, Method

TASK_TYPES = {"classification": TaskType.SEQ_CLS, "causal_lm": TaskType.CAUSAL_LM}
_INITS = {"random": PromptTuningInit.RANDOM, "text": PromptTuningInit.TEXT, "vocab": PromptTuningInit.SAMPLE_VOCAB}


class VirtualTokenModel(nn.Module):
    """A peft Prompt-/P-tuning model whose logits line up with the input tokens.

    - causal LM: peft returns logits for the n virtual positions too; they are dropped, so
      position t still predicts token t+1 of the batch (the loop's and evaluation's loss shift).
    - decoder classifiers (GPT-2, Llama: the head scores every position and the model picks the
      last non-pad token from input_ids): peft passes only inputs_embeds, so transformers falls
      back to the very last position, a pad in every right-padded row. Here the head's
      per-position scores are taken at each row's last attended token instead.
    Encoder classifiers (BERT) pool a fixed position and need neither fix.
    """

    def __init__(self, peft_model: PeftModel, task: str):
        super().__init__()
        self.peft_model = peft_model
        self.task = task
        self.num_virtual_tokens = peft_model.active_peft_config.num_virtual_tokens

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        if self.task == "causal_lm":
            out = self.peft_model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
            out["logits"] = out.logits[:, self.num_virtual_tokens:]
            return out
        head = self.peft_model.base_model.get_submodule(self.peft_model.cls_layer_name)
        scores = []
        hook = head.register_forward_hook(lambda module, args, output: scores.append(output))
        try:
            out = self.peft_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        finally:
            hook.remove()
        logits = out.logits
        if scores and scores[-1].ndim == 3:  # (batch, virtual + real positions, labels): a decoder head
            per_position = scores[-1]
            if attention_mask is None:
                last = torch.full((per_position.shape[0],), per_position.shape[1] - 1, device=per_position.device)
            else:  # the last attended input token, behind the virtual ones
                positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
                last = (positions * attention_mask).argmax(-1) + self.num_virtual_tokens
            logits = per_position[torch.arange(per_position.shape[0], device=per_position.device), last]
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def generate(self, **kwargs):
        return self.peft_model.generate(**kwargs)


def build_virtual_token_model(base_model: nn.Module, config: PeftConfig, task: str) -> VirtualTokenModel:
    return VirtualTokenModel(get_peft_model(base_model, config), task)


def save_virtual_token_model(model: VirtualTokenModel, out_dir: Path) -> None:
    model.peft_model.save_pretrained(str(out_dir), safe_serialization=True)


def load_virtual_token_model(base_model: nn.Module, saved_dir: Path) -> VirtualTokenModel:
    peft_model = PeftModel.from_pretrained(base_model, str(saved_dir))
    task = next(t for t, tt in TASK_TYPES.items() if tt == peft_model.active_peft_config.task_type)
    return VirtualTokenModel(peft_model, task).eval()


class PromptTuning(Method):
    name = "prompt"

    def build(self, base_model: nn.Module, method_config: PromptMethod, task: str,
              context: BuildContext | None = None) -> nn.Module:
        text = {}
        if method_config.init == "text":
            if context is None or not context.source:
                raise ValueError("Prompt-tuning with init = text needs the base model's tokenizer (its source)")
            # peft tokenizes init_text itself, with the tokenizer saved beside the base model.
            text = {"prompt_tuning_init_text": method_config.init_text, "tokenizer_name_or_path": context.source}
        # SAMPLE_VOCAB copies the embeddings of n tokens drawn uniformly from the vocabulary.
        config = PromptTuningConfig(task_type=TASK_TYPES[task], num_virtual_tokens=method_config.num_virtual_tokens,
                                    prompt_tuning_init=_INITS[method_config.init], **text)
        return build_virtual_token_model(base_model, config, task)

    def save(self, model: nn.Module, out_dir: Path) -> None:
        save_virtual_token_model(model, out_dir)

    def load(self, base_model: nn.Module, saved_dir: Path) -> nn.Module:
        return load_virtual_token_model(base_model, saved_dir)
