"""Fine-tuning methods behind one interface (workers.methods.base.Method), looked up by `method.type`.

Every module in this package that defines a `Method` subclass is a method implementation,
registered under its `name`, the name of its torch-free spec in app/methods: adding a method
is a spec there and a module here, with no edit to this file.
"""
import importlib
import inspect
import pkgutil

from workers.methods.base import BuildContext, Method, linear_module_names, total_parameters


def _discover() -> dict[str, type[Method]]:
    found: dict[str, type[Method]] = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Method) and cls.__module__ == module.__name__ and not inspect.isabstract(cls):
                if cls.name in found:
                    raise ValueError(f"two implementations of method {cls.name!r}: {found[cls.name]} and {cls}")
                found[cls.name] = cls
    return found


METHODS: dict[str, type[Method]] = _discover()


def get_method(type_name: str) -> Method:
    try:
        return METHODS[type_name]()
    except KeyError:
        raise ValueError(f"unknown method {type_name!r}; this worker knows: {', '.join(sorted(METHODS))}") from None


__all__ = ["METHODS", "BuildContext", "Method", "get_method", "linear_module_names", "total_parameters"]
