"""training.gradient_checkpointing: keep only each layer's input in the forward and recompute the
layer in the backward, trading about a third more compute for activations that no longer grow
with the number of layers.

Non-reentrant checkpointing (PyTorch's recommendation): it follows gradients into trainable weights
inside the layer (LoRA, adapters) even when the layer's input needs none. The input embeddings are
still made to require grads (`enable_input_require_grads`), as peft does, so a frozen embedding
table in front of checkpointed layers never cuts the graph.
"""
from transformers import PreTrainedModel


def enable_gradient_checkpointing(base: PreTrainedModel) -> None:
    """Turn checkpointing on for the transformers model under a method's wrapper."""
    if not getattr(base, "supports_gradient_checkpointing", False):
        raise ValueError(f"{type(base).__name__} does not support gradient checkpointing; "
                         "turn training.gradient_checkpointing off")
    # transformers 5's name for gradient_checkpointing_enable (deprecated, removed in v6)
    base.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    base.enable_input_require_grads()
    base.config.use_cache = False  # a cache is recomputed, not reused, under checkpointing
