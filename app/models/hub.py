"""Checking a hub id when it is registered: its config.json is fetched (only that file, with a short
timeout) through huggingface_hub — no torch, no transformers in the server — and its shape facts are
stored like a local directory's, so the estimate and the run checks work before any worker loads it.
The parameter count comes from the safetensors headers (range requests) when the hub serves them.

HF_ENDPOINT (a mirror) and HF_TOKEN (gated models) are read when the check runs.
"""
import json
import os
import tempfile
from pathlib import Path

from app.models.inspect import ModelSourceError, config_facts

TIMEOUT_SECONDS = 10.0


class HubUnreachable(ModelSourceError):
    """The hub did not answer (no network, a closed port, HF_HUB_OFFLINE): not the id's fault."""


def hub_facts(repo_id: str, timeout: float = TIMEOUT_SECONDS) -> dict:
    """The shape facts of hub model `repo_id` from its config.json; ModelSourceError says why not."""
    import httpx
    from huggingface_hub import constants, get_safetensors_metadata, hf_hub_download
    from huggingface_hub import errors

    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    if constants.HF_HUB_OFFLINE:
        raise HubUnreachable(f"The hub cannot be reached: HF_HUB_OFFLINE is set on the server, so {repo_id!r} "
                             "cannot be checked. Register a local directory instead (peftlab models import DIR).")
    try:
        with tempfile.TemporaryDirectory(prefix="peftlab-hub-") as cache:
            path = hf_hub_download(repo_id, "config.json", cache_dir=cache, etag_timeout=timeout, endpoint=endpoint)
            config = json.loads(Path(path).read_text(encoding="utf-8"))
    except errors.GatedRepoError:
        raise ModelSourceError(f"{repo_id!r} is gated on the hub: accept its licence there and set HF_TOKEN on the "
                               "server and the workers.") from None
    except errors.RepositoryNotFoundError:
        raise ModelSourceError(f"{repo_id!r} does not exist on the hub ({endpoint}), or is private "
                               "(set HF_TOKEN for private models).") from None
    except (errors.OfflineModeIsEnabled, errors.LocalEntryNotFoundError, httpx.TransportError, OSError) as e:
        # LocalEntryNotFoundError (no connection, nothing cached) subclasses EntryNotFoundError: caught first.
        reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise HubUnreachable(f"The hub ({endpoint}) cannot be reached from the server, so {repo_id!r} cannot be "
                             f"checked ({reason}). Try again later, or register a local directory instead "
                             "(peftlab models import DIR).") from None
    except errors.EntryNotFoundError:
        raise ModelSourceError(f"{repo_id!r} has no config.json on the hub: it is not a transformers model.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelSourceError(f"The config.json of {repo_id!r} on the hub is not valid JSON.") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelSourceError(f"The config.json of {repo_id!r} names no model_type: not a transformers model.")
    facts = config_facts(config)
    facts["num_parameters"] = None
    try:
        metadata = get_safetensors_metadata(repo_id, endpoint=endpoint)
        facts["num_parameters"] = sum(count for dtype, count in metadata.parameter_count.items()
                                      if dtype.startswith(("F", "BF"))) or None
    except Exception:  # noqa: BLE001 — the count is a nicety (a repo without safetensors has none to read)
        pass
    return facts
