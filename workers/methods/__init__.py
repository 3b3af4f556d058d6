"""Fine-tuning methods behind one interface (workers.methods.base.Method), looked up by `method.type`."""
from workers.methods.adapter import Adapter
from workers.methods.adapter_fusion import AdapterFusion
from workers.methods.base import BuildContext, Method, linear_module_names, total_parameters
from workers.methods.full import FullFineTuning
from workers.methods.lora import Lora
from workers.methods.prefix import Prefix
from workers.methods.prompt import PromptTuning
from workers.methods.ptuning import PTuning

# One line per method module.
_ALL: tuple[type[Method], ...] = (
    Lora,
    FullFineTuning,
    Prefix,
    PTuning,
    PromptTuning,
    Adapter,
    AdapterFusion,
)
METHODS: dict[str, type[Method]] = {m.name: m for m in _ALL}


def get_method(type_name: str) -> Method:
    try:
        return METHODS[type_name]()
    except KeyError:
        raise ValueError(f"unknown method {type_name!r}; this worker knows: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "BuildContext", "Method", "get_method", "linear_module_names", "total_parameters"]
