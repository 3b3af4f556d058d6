"""Fine-tuning methods behind one interface (workers.methods.base.Method), looked up by `method.type`."""
from workers.methods.base import Method, linear_module_names, total_parameters
from workers.methods.full import FullFineTuning
from workers.methods.lora import Lora

METHODS: dict[str, type[Method]] = {m.name: m for m in (Lora, FullFineTuning)}


def get_method(type_name: str) -> Method:
    try:
        return METHODS[type_name]()
    except KeyError:
        raise ValueError(f"unknown method {type_name!r}; this worker knows: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "Method", "get_method", "linear_module_names", "total_parameters"]
