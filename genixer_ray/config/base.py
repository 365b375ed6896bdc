"""What every config shares: the strict base, the annotated types, redaction."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict

from genixer_ray.models import check_model_spec
from genixer_ray.tasks import TASKS
from genixer_ray.views import check_views

TASK_IDS = tuple(TASKS)


class Strict(BaseModel):
    """A config section: unknown keys are errors, values frozen once validated."""

    # Unknown keys are errors: a typo such as `temprature` must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


def path_safe_name(v: str) -> str:
    # A name becomes a folder on any store: keep it to characters every store accepts.
    if not all(c.isalnum() or c in "-_." for c in v) or v.startswith("."):
        raise ValueError("use letters, digits, '-', '_' and '.' only, not starting with '.'")
    return v


# One reference type per kind of model, checked by genixer_ray.models (paths must exist now).
ModelSpec = Annotated[str, AfterValidator(lambda v: check_model_spec(v, kind="generator"))]
ClipModelSpec = Annotated[str, AfterValidator(lambda v: check_model_spec(v, kind="clip"))]


def _task_ids(v: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(v) - set(TASK_IDS))
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(TASK_IDS)}")
    return v


def _weights(v: dict[str, float]) -> dict[str, float]:
    if any(w < 0 for w in v.values()):
        raise ValueError("weights must be >= 0")
    return v


# Named views (genixer_ray.views): each name and SQL condition checked when the config loads.
Views = Annotated[dict[str, str], AfterValidator(lambda v: check_views(v))]

# A mapping keyed by task id (unknown ids are errors), and one whose values are weights too.
TaskIdMap = Annotated[dict[str, float], AfterValidator(_task_ids)]
TaskWeights = Annotated[dict[str, float], AfterValidator(_task_ids), AfterValidator(_weights)]


def copy_tree(node: Any) -> Any:
    """``node`` with every nested dict copied (a config mapping to change without touching the caller's)."""
    return {k: copy_tree(v) for k, v in node.items()} if isinstance(node, dict) else node


# Keys whose values are credentials wherever they appear (storage options are masked whole).
_SECRET_KEY = re.compile(r"secret|passw|token(?!s$)|credential|private_?key|access_?key|api_?key|session_?key|^key$|sas_|signature", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)


def redact(node: Any) -> Any:
    """``node`` with every credential masked as ``***``, at any depth of dicts and lists.

    Masked: every value under a ``storage_options`` key (its keys stay visible), the value of any
    key that names a secret (``secret``, ``password``, ``token``, ``key``, ...), and the user
    information of URLs (``s3://user:pass@bucket`` -> ``s3://***@bucket``).
    """
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if str(k).endswith("storage_options") and isinstance(v, dict):
                out[k] = {kk: "***" for kk in v}
            elif _SECRET_KEY.search(str(k)) and isinstance(v, str | bytes | int | float) and not isinstance(v, bool):
                out[k] = "***"
            else:
                out[k] = redact(v)
        return out
    if isinstance(node, list | tuple):
        return [redact(v) for v in node]
    if isinstance(node, str):
        return _URL_USERINFO.sub(r"\g<scheme>***@", node)
    return node


def redacted(cfg: BaseModel) -> dict[str, Any]:
    """``cfg`` as JSON-ready data with every credential masked (see :func:`redact`)."""
    return redact(cfg.model_dump(mode="json"))
