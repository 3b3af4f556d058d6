"""Every fine-tuning method's torch-free spec (app.methods.registry), one module per method.

Importing this package imports every module in it, and each method module registers its spec
(`registry` and `shape` register nothing), so adding a method needs no edit in this file.
"""
import importlib
import pkgutil

from app.methods.registry import (SPECS, Count, CountError, MethodConfig, MethodSpec, all_specs, get_spec,
                                  markdown_table, method_union)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["SPECS", "Count", "CountError", "MethodConfig", "MethodSpec", "all_specs", "get_spec", "markdown_table", "method_union"]
