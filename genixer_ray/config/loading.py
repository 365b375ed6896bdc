"""Loading a config: YAML, ``key.sub=value`` overrides, validation into errors that name each field."""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from genixer_ray.config.base import copy_tree, redact
from genixer_ray.config.filter_pass import FilterPassConfig
from genixer_ray.config.legacy import OLD_SECTIONS, PASS_MOVES, RUN_MOVES, TRAIN_MOVES, translate
from genixer_ray.config.run import RunConfig
from genixer_ray.config.train import TrainConfig
from genixer_ray.errors import ConfigError

log = logging.getLogger(__name__)

_KIND_NAMES = {RunConfig: "run configuration", FilterPassConfig: "filter pass configuration", TrainConfig: "training configuration"}
_MOVES = {RunConfig: RUN_MOVES, FilterPassConfig: PASS_MOVES, TrainConfig: TRAIN_MOVES}


def _sections(annotation: Any) -> list[type[BaseModel]]:
    """The config classes a field's annotation holds (``X``, ``X | None``, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        return [c for a in get_args(annotation) for c in _sections(a)]
    return []


def field_paths(kind: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of ``kind``, sections and their fields alike."""
    out = []
    for name, info in kind.model_fields.items():
        out.append(prefix + name)
        for section in _sections(info.annotation):
            out += field_paths(section, f"{prefix}{name}.")
    return out


def _home(kind: type[BaseModel], key: str) -> str:
    """Where settings named ``key`` are in ``kind`` (``batch_size belongs under pools.decode or ...``), or ``""``."""
    places = sorted({p.rsplit(".", 1)[0] if "." in p else "the top level" for p in field_paths(kind) if p.rsplit(".", 1)[-1] == key})
    return f"{key} belongs under {' or '.join(places[:4])}" if places else ""


def _where_it_goes(kind: type[BaseModel], loc: tuple, given: Any) -> str:
    """A hint for a key the config does not have there: its section in today's layout."""
    key = str(loc[-1])
    if len(loc) == 1 and key in OLD_SECTIONS:  # what translation left in an old section has no place
        homes = [h for k in (given if isinstance(given, dict) else {}) if (h := _home(kind, str(k)))]
        return f" (an old section: its settings are now under {OLD_SECTIONS[key]}{''.join('; ' + h for h in homes)})"
    home = _home(kind, key)
    return f" ({home})" if home else ""


def _format_errors(err: ValidationError, source: str, kind: type[BaseModel]) -> str:
    lines = [f"invalid {_KIND_NAMES.get(kind, 'configuration')} ({source}):"]
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg += _where_it_goes(kind, e["loc"], e["input"])
        # The value as given, its credentials masked (a misspelt storage_options key holds them too).
        name = str(e["loc"][-1]) if e["loc"] else ""
        got = redact({name: e["input"]})[name]
        lines.append(f"  {field}: {msg} (got {got!r})" if field != "<root>" else f"  {msg}")
    return "\n".join(lines)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    out = copy_tree(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key.sub=value")
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {p} is not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw else ""
    return out


def build_config(
    data: dict[str, Any] | None = None, overrides: list[str] | None = None, *, source: str = "<dict>", kind: type[BaseModel] = RunConfig
):
    """Validate a config mapping (plus overrides) into a ``kind`` (:class:`RunConfig` by default).

    Args:
        data: the parsed mapping; ``None`` means all defaults (the embedded demo run).
        overrides: ``key.sub=value`` strings applied on top of ``data``.
        source: where ``data`` came from, for error messages.
        kind: the config class: :class:`RunConfig`, :class:`FilterPassConfig` or :class:`TrainConfig`.

    Raises:
        ConfigError: naming every bad field and its value.
    """
    merged = apply_overrides(data or {}, overrides or [])
    if kind in _MOVES:
        try:
            merged, moved = translate(merged, _MOVES[kind])
        except ValueError as e:
            raise ConfigError(f"invalid {_KIND_NAMES[kind]} ({source}): {e}") from None
        if moved:
            log.warning("%s is in the layout before components; read as today's: %s", source, "; ".join(moved))
    try:
        return kind.model_validate(merged)
    except ValidationError as e:
        raise ConfigError(_format_errors(e, source, kind)) from None


def _read_config(path: str) -> str:
    """The text of a config file: a local path or any fsspec URL (``s3://...``, credentials from the environment)."""
    if "://" not in path:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        return Path(path).read_text()
    import fsspec

    try:
        with fsspec.open(path, "rt", encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"config {path} cannot be read: {type(e).__name__}: {e}") from None


def _read_mapping(path: str) -> dict[str, Any]:
    """The top-level mapping of the YAML config at ``path``."""
    try:
        data = yaml.safe_load(_read_config(path)) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


# Top-level keys that only one kind of config has, in either layout (``name``, ``prompts``,
# ``scaling``, ``filters``, ``engines``, ``pools``, ``ray``, ``publish`` and ``views`` are shared,
# so they decide nothing alone).
_OWN_KEYS = {
    TrainConfig: {"data", "model", "optim", "storage_path", "storage_options", "checkpoint_every", "keep_checkpoints", "export_path", "seed"},
    FilterPassConfig: {"engine", "images", "run"},
    RunConfig: {"mode", "task_mix", "samples_per_image", "generator", "sampling", "input", "output"},
}


def config_kind(path: str | Path | None) -> type[BaseModel]:
    """Which kind of config the file at ``path`` is, from its top-level keys.

    A training config or a filter pass config by the keys only it has; a file that holds
    ``filters`` and nothing of a run (no generator engine or pool) is a filter pass config;
    anything else (and no file) is a run config.
    """
    if path is None:
        return RunConfig
    data = _read_mapping(str(path))
    keys = set(data)
    for kind, own in _OWN_KEYS.items():
        if keys & own:
            return kind
    generates = any("generator" in (data.get(k) or {}) for k in ("engines", "pools"))
    shared = {"name", "filters", "scaling", "engines", "pools", "ray", "decontamination", "publish", "views"}
    return FilterPassConfig if "filters" in keys and keys <= shared and not generates else RunConfig


def kind_name(kind: type[BaseModel]) -> str:
    """How messages name a config class (``run configuration``, ...)."""
    return _KIND_NAMES[kind]


def load_config(path: str | Path | None, overrides: list[str] | None = None, *, kind: type[BaseModel] = RunConfig):
    """Load a YAML config of ``kind`` from ``path`` (a local path or a URL such as ``s3://...``;
    ``None``: the built-in defaults) and validate it."""
    if path is None:
        return build_config(None, overrides, source="defaults", kind=kind)
    path = str(path)
    return build_config(_read_mapping(path), overrides, source=path, kind=kind)
