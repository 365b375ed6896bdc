"""Named views: which parsed rows a reader takes, as a SQL condition over the row's columns.

A view is a name and a condition in SQL's expression syntax (Polars' ``sql_expr``) over the
columns of :data:`~genixer_ray.schema.GENERATION_SCHEMA`::

    views:
      strict: "judge_p_yes >= 0.8 and clip_score >= 0.25"
      grounded: "parsed_task in ('rec', 'reg') and keep"

It selects among the parsed rows (``status = 'ok'``); a row where the condition is null (a score
the row lacks) is not selected. Three views always exist: ``kept`` (the filters' decision,
``keep``), ``parsed`` (every parsed row) and ``paper`` (the paper's rule: its judge's sampled score
in 0.5-0.7, computed with ``filters.judge.paper_score``). A config's views are checked when it loads: the name, the
syntax, that every column exists and that the condition is a boolean, so a typo fails before any
work, naming the view. ``export``, ``publish``, ``report`` and ``inspect`` take ``--view NAME`` (or
``--view NAME=CONDITION`` for one not in the config); a run's views are those of its config, a
filter pass's those of its run and its own.
"""

from __future__ import annotations

import re

import polars as pl

from genixer_ray.errors import ConfigError

BUILT_IN = {
    "kept": "keep",  # this project's rules: the filters' decision
    "parsed": "true",
    # The paper's rule: Genixer kept the pairs its judge scored in the band 0.5-0.7, with the
    # judge's sampled score (filters.judge.paper_score computes it).
    "paper": "judge_paper_score >= 0.5 and judge_paper_score <= 0.7",
}
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def check_view(name: str, condition: str) -> str:
    """``condition`` when it is a valid view named ``name``.

    Raises:
        ValueError: a bad name, a syntax error, an unknown column, or a condition that is not a boolean.
    """
    from genixer_ray.schema import GENERATION_SCHEMA

    if not _NAME.match(name):
        raise ValueError(f"view {name!r}: a name is lowercase letters, digits and '_', starting with a letter")
    try:
        expr = pl.sql_expr(condition)
    except Exception as e:  # noqa: BLE001 - Polars' SQL parser raises its own error types
        raise ValueError(f"view {name!r}: cannot parse {condition!r}: {e}") from None
    unknown = sorted(set(expr.meta.root_names()) - set(GENERATION_SCHEMA))
    if unknown:
        raise ValueError(f"view {name!r}: no column {', '.join(unknown)} (columns are those of genixer_ray.schema.GENERATION_SCHEMA)")
    try:
        dtype = pl.DataFrame(schema=GENERATION_SCHEMA).select(expr.alias("v")).schema["v"]
    except Exception as e:  # noqa: BLE001 - a type error in the condition (a string compared with a number)
        raise ValueError(f"view {name!r}: {condition!r} cannot be evaluated: {e}") from None
    if dtype != pl.Boolean:
        raise ValueError(f"view {name!r}: {condition!r} is a {dtype}, not a condition (true or false)")
    return condition


def check_views(views: dict[str, str]) -> dict[str, str]:
    """A config's views, each checked (:func:`check_view`); a built-in name is not redefined."""
    for name, condition in views.items():
        if name in BUILT_IN:
            raise ValueError(f"view {name!r} is built in ({BUILT_IN[name]!r}); name yours otherwise")
        check_view(name, condition)
    return views


def selector(condition: str) -> pl.Expr:
    """The Polars filter of a view: parsed rows where ``condition`` is true (null counts as false)."""
    return (pl.col("status") == "ok") & pl.sql_expr(condition).fill_null(False)


def view_columns(condition: str) -> list[str]:
    """The columns :func:`selector` of ``condition`` reads: a reader of a view loads only these."""
    return sorted({"status", *pl.sql_expr(condition).meta.root_names()})


def recorded_views(store) -> dict[str, str]:
    """The views a run (or a filter pass: its run's, then its own) knows, the built-in ones included."""
    from genixer_ray.store import RunStore, source_run

    run = RunStore(source_run(store.url), store.storage_options)
    views = dict(BUILT_IN) | ((run.config() or {}).get("views") or {})
    if run.url != store.url:
        views |= (store.read_json("manifest.json") or {}).get("views") or {}
    return views


def resolve_view(store, spec: str) -> tuple[str, str]:
    """``(name, condition)`` of ``--view SPEC``: a name the run knows, or ``NAME=CONDITION``.

    Raises:
        ConfigError: an unknown name (the known ones listed) or an invalid condition.
    """
    name, sep, condition = spec.partition("=")
    name = name.strip()
    if not sep:
        known = recorded_views(store)
        if name not in known:
            raise ConfigError(f"--view {name}: no such view in the run's config; known: {', '.join(sorted(known))} (or --view NAME=CONDITION)")
        condition = known[name]
    try:
        return name, check_view(name, condition.strip())
    except ValueError as e:
        raise ConfigError(f"--view: {e}") from None
