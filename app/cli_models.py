"""`peftlab models import DIR`: copy a local transformers model (config, safetensors weights, tokenizer)
into the data directory's models/ folder and register it, for hosts that cannot reach the hub.

Only safetensors weights are taken: a directory whose weights are pickle files (pytorch_model.bin, .pt…)
is refused, since loading a pickle runs code. The copy lands under a temporary name and is renamed into
place, so an interrupted import leaves no half model behind; a model the registry refuses is removed.
"""
import argparse
import shutil
import sys
from pathlib import Path

# Weight files that are pickles (torch.load runs code) or of other frameworks: never copied.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
OTHER_WEIGHTS = (".h5", ".msgpack", ".onnx", ".gguf")


class ImportRefused(ValueError):
    pass


def files_to_copy(source: Path) -> list[Path]:
    """The top-level files of `source` a registered model needs; ImportRefused says why it cannot be one."""
    if not source.is_dir():
        raise ImportRefused(f"{source} is not a directory")
    if not (source / "config.json").is_file():
        raise ImportRefused(f"{source} has no config.json: not a transformers model directory")
    files = sorted(p for p in source.iterdir() if p.is_file())  # HF cache snapshots: symlinks to blobs, followed
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    pickles = [p for p in files if p.suffix in PICKLE_SUFFIXES]
    if not safetensors:
        found = ", ".join(p.name for p in pickles[:3]) or "no weight files"
        raise ImportRefused(f"{source} has no .safetensors weights ({found}); peftlab loads safetensors only, never "
                            "pickle files. Convert first: load the model with transformers and "
                            "save_pretrained(dir, safe_serialization=True)")
    return [p for p in files if p.suffix not in PICKLE_SUFFIXES + OTHER_WEIGHTS]


def import_model(source: Path, name: str | None) -> tuple[str, Path, list[str]]:
    """Copy and register; returns (model id, where it lies, the files left behind)."""
    from app.config import get_settings
    from app.db import session_scope
    from app.models import service
    from app.models.inspect import ModelSourceError

    source = source.expanduser().resolve()
    files = files_to_copy(source)
    skipped = sorted(p.name for p in source.iterdir() if p.is_file() and p not in files)
    settings = get_settings()
    name = (name or source.name).strip()
    root = (settings.data_dir / "models").resolve()
    root.mkdir(parents=True, exist_ok=True)
    dest, n = root / service.slug(name), 2
    while dest.exists():
        dest, n = root / f"{service.slug(name)[:60]}-{n}", n + 1
    partial = root / f".importing-{dest.name}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        for path in files:
            shutil.copyfile(path, partial / path.name)
        partial.rename(dest)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        with session_scope() as session:
            model = service.create(session, name=name, source=str(dest), allowed=settings.allowed_model_dirs)
            return model.id, dest, skipped
    except (ModelSourceError, ValueError) as e:
        shutil.rmtree(dest, ignore_errors=True)
        raise ImportRefused(str(e)) from None


def cmd_models_import(args: argparse.Namespace) -> int:
    from app.cli import _apply

    _apply(args)
    try:
        model_id, dest, skipped = import_model(Path(args.directory), args.name)
    except ImportRefused as e:
        print(f"not imported: {e}", file=sys.stderr)
        return 2
    if skipped:
        print(f"left out (not safetensors): {', '.join(skipped)}", file=sys.stderr)
    print(f"imported into {dest}", file=sys.stderr)
    print(model_id)
    return 0


def add_parser(sub) -> None:
    models = sub.add_parser("models", help="base models")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    about = ("copy a local model directory (safetensors only) into the data directory and register it; "
             "prints the new model id")
    imp = models_sub.add_parser("import", help=about, description=about)
    imp.add_argument("directory", help="a transformers model directory: config.json, *.safetensors, tokenizer files")
    imp.add_argument("--name", default=None, help="the name shown in the app (default: the directory's name)")
    imp.add_argument("--data-dir", default=None)
    imp.set_defaults(func=cmd_models_import)
