"""A run's config as a YAML file: exported from a run (GET /api/runs/{id}/config.yaml) and read back to start
one (POST /api/runs/yaml, `peftlab runs submit`, the New run form's file picker). The file holds exactly the
body POST /api/runs takes, so a config goes round trip unchanged."""
import yaml

MAX_YAML_BYTES = 256 * 1024  # a run config is a few hundred bytes; anything near this is not one


class ConfigFileError(ValueError):
    """The file is not a YAML mapping; worded for the person who chose it."""


def to_yaml(run_id: int, config: dict) -> str:
    header = (f"# peftlab run {run_id}: the body of POST /api/runs.\n"
              "# Start it again with `peftlab runs submit THIS.yaml` or New run → Start from a YAML file.\n")
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True, default_flow_style=False)


def from_yaml(data: bytes | str) -> dict:
    if len(data) > MAX_YAML_BYTES:
        raise ConfigFileError(f"The file is larger than {MAX_YAML_BYTES // 1024} KB; a run config is much smaller.")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigFileError("The file is not UTF-8 text.") from None
    try:
        config = yaml.safe_load(data)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "it cannot be parsed"
        raise ConfigFileError(f"The file is not valid YAML{where}: {problem}.") from None
    if not isinstance(config, dict):
        raise ConfigFileError("The file must hold a mapping (name:, dataset_id:, method:, …), "
                              "like the YAML a run page exports.")
    return config
