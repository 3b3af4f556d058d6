"""Checking a hub id when it is registered: its config.json is fetched (only that file, with a short
timeout) through huggingface_hub — no torch, no transformers in the server — and its shape facts are
stored like a local directory's, so the estimate and the run checks work before any worker loads it.
The parameter count comes from the safetensors headers (range requests) when the hub serves them.

HF_ENDPOINT (a mirror) and HF_TOKEN (gated models) are read when the check runs.
"""
import json
import os

from app.models.inspect import ModelSourceError, config_facts

TIMEOUT_SECONDS = 10.0
MAX_CONFIG_BYTES = 4_000_000  # real configs are a few KB


class HubUnreachable(ModelSourceError):
    """The hub did not answer (no network, a closed port, HF_HUB_OFFLINE): not the id's fault."""


def hub_facts(repo_id: str, timeout: float = TIMEOUT_SECONDS) -> dict:
    """The shape facts of hub model `repo_id` from its config.json; ModelSourceError says why not."""
    from huggingface_hub import HfApi, constants, hf_hub_url
    from huggingface_hub import errors
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    unreachable = (f"The hub ({endpoint}) cannot be reached from the server, so {repo_id!r} cannot be checked "
                   "({}). Try again later, or register a local directory instead (peftlab models import DIR).")
    # huggingface_hub reads HF_HUB_OFFLINE when it is first imported; the environment may have changed since.
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise HubUnreachable(f"The hub cannot be reached: HF_HUB_OFFLINE is set on the server, so {repo_id!r} "
                             "cannot be checked. Register a local directory instead (peftlab models import DIR).")
    # One GET, no retries: an admin waits on this request (hf_hub_download backs off for half a minute).
    try:
        response = get_session().get(hf_hub_url(repo_id, "config.json", endpoint=endpoint), headers=build_hf_headers(),
                                     timeout=timeout, follow_redirects=True)
    except Exception as e:  # noqa: BLE001 — the transport's errors: refused, no route, timed out, TLS
        raise HubUnreachable(unreachable.format(str(e).splitlines()[0][:200] if str(e) else type(e).__name__)) from None
    try:
        hf_raise_for_status(response)
    except errors.GatedRepoError:
        raise ModelSourceError(f"{repo_id!r} is gated on the hub: accept its licence there and set HF_TOKEN on the "
                               "server and the workers.") from None
    except errors.RepositoryNotFoundError:
        raise ModelSourceError(f"{repo_id!r} does not exist on the hub ({endpoint}), or is private "
                               "(set HF_TOKEN for private models).") from None
    except errors.EntryNotFoundError:
        raise ModelSourceError(f"{repo_id!r} has no config.json on the hub: it is not a transformers model.") from None
    except errors.HfHubHTTPError:
        raise HubUnreachable(unreachable.format(f"it answered HTTP {response.status_code}")) from None
    if len(response.content) > MAX_CONFIG_BYTES:
        raise ModelSourceError(f"The config.json of {repo_id!r} is larger than {MAX_CONFIG_BYTES // 1_000_000} MB.")
    try:
        config = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelSourceError(f"The config.json of {repo_id!r} on the hub is not valid JSON.") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelSourceError(f"The config.json of {repo_id!r} names no model_type: not a transformers model.")
    facts = config_facts(config)
    facts["num_parameters"] = None
    try:
        metadata = HfApi(endpoint=endpoint).get_safetensors_metadata(repo_id, timeout=timeout)
        facts["num_parameters"] = sum(count for dtype, count in metadata.parameter_count.items()
                                      if dtype.startswith(("F", "BF"))) or None
    except Exception:  # noqa: BLE001 — the count is a nicety (a repo without safetensors has none to read)
        pass
    return facts
