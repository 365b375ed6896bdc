"""MkDocs hook: the reference pages, generated from the code at build time so they cannot drift.

* ``reference/config.md``: every field of every kind of config (run, filter pass, training), from
  the pydantic models: dotted name, type, allowed values, default, description;
* ``reference/cli.md``: every command and option, from the argument parser the CLI runs;
* ``reference/codes.md``: error codes, skip codes and reject reasons, from ``genixer_ray.schema``;
* ``images/report.png``, the front page's picture of a run report: taken again by ``make docs``
  (headless Chromium) whenever ``make demo``'s report (``runs/demo/report.html``) is newer than it;
  other builds (the tests') leave the repository's files alone.

A page holds a marker line (``<!-- generated: config -->``) where the generated text goes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(annotation) -> str:
    """A field's type as a reader says it (``float``, ``list of str``, ``one of 'a', 'b'``)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin in (list, tuple):
        return f"{origin.__name__} of " + " and ".join(dict.fromkeys(_type_name(a) for a in args if a is not Ellipsis))
    if origin is dict:
        return f"mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def _model_of(annotation) -> type[BaseModel] | None:
    """The config section class a field holds (also when optional), else ``None``."""
    for a in (annotation, *typing.get_args(annotation)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    return f"`{json.dumps(value)}`" if not isinstance(value, dict) or len(json.dumps(value)) < 60 else "see the section"


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return text.replace("|", "\\|")


def config_rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    """A Markdown table row per leaf field of ``model``, sections followed into."""
    rows = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        section = _model_of(field.annotation)
        if section is not None:
            rows.append(f"| **`{dotted}`** | section | {'null' if field.default is None else ''} | {section.__doc__.splitlines()[0] if section.__doc__ else ''} |")
            rows += config_rows(section, f"{dotted}.")
            continue
        cells = [_type_name(field.annotation), _default(field), (field.description or "").replace("\n", " ")]
        rows.append(f"| `{dotted}` | " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def config_reference() -> str:
    """The configuration reference: one table per kind of config."""
    from genixer_ray.config import FilterPassConfig, RunConfig, TrainConfig

    out = []
    for title, model, command in (("Generation run", RunConfig, "genixer-ray generate CONFIG"),
                                  ("Filter pass", FilterPassConfig, "genixer-ray filter RUN CONFIG"),
                                  ("Training", TrainConfig, "genixer-ray train CONFIG")):
        out += [f"## {title}", "", f"{model.__doc__.splitlines()[0]} (`{command}`; `genixer-ray show-config` prints one with every default).", "",
                "| field | type | default | description |", "|---|---|---|---|", *config_rows(model), ""]
    return "\n".join(out + legacy_rows())


def legacy_rows() -> list[str]:
    """Where each key of the layout before components went (the loader moves them, saying so)."""
    from genixer_ray.config.legacy import PASS_MOVES, RUN_MOVES, TRAIN_MOVES

    out = ["## Keys of the layout before components", "",
           "Configs and recorded `run.json` files of earlier releases still load: each of these keys is read as its new place, "
           "and the command prints one line naming what moved. `genixer-ray show-config OLD.yaml` prints the file in today's layout.", "",
           "| kind | old key | today |", "|---|---|---|"]
    for kind, moves in (("run", RUN_MOVES), ("filter pass", PASS_MOVES), ("training", TRAIN_MOVES)):
        out += [f"| {kind} | `{old}` | {', '.join(f'`{n}`' for n in new)} |" for old, new in moves.items()]
    return out


def cli_reference() -> str:
    """Every command of the CLI with its arguments, from the parser it runs."""
    from genixer_ray.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in subparsers._choices_actions}
    out = []
    for name, sub in subparsers.choices.items():
        out += [f"## `genixer-ray {name}`", "", helps.get(name) or "", "", "```text", sub.format_usage().strip(), "```", "",
                "| argument | meaning |", "|---|---|"]
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            label = ", ".join(action.option_strings) or action.metavar or action.dest
            out.append(f"| `{label}` | {_cell(action.help or '')} |")
        out.append("")
    return "\n".join(out)


def codes_reference() -> str:
    """Error codes, skip codes and reject reasons with their meanings."""
    from genixer_ray.schema import ERROR_CODES, REJECT_REASONS, SKIP_CODES

    out = ["## Error and skip codes (`error_code`)", "", "| code | status | meaning |", "|---|---|---|"]
    out += [f"| `{c}` | {'skipped' if c in SKIP_CODES else 'error'} | {m} |" for c, m in ERROR_CODES.items()]
    out += ["", "## Reject reasons (`reject_reasons`, `*_reason`)", "", "| reason | meaning |", "|---|---|"]
    out += [f"| `{c}` | {m} |" for c, m in REJECT_REASONS.items()]
    return "\n".join(out)


GENERATED = {"config": config_reference, "cli": cli_reference, "codes": codes_reference}


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each ``<!-- generated: NAME -->`` line with its generated text."""
    for name, make in GENERATED.items():
        marker = f"<!-- generated: {name} -->"
        if marker in markdown:
            markdown = markdown.replace(marker, make())
    return markdown


ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "runs" / "demo" / "report.html"
PICTURE = ROOT / "docs" / "images" / "report.png"


def on_pre_build(config) -> None:
    """Under ``make docs`` (``GENIXER_DOCS_PICTURE=1``), take the report's picture again when the
    demo's report is newer (nothing to do on a machine without the demo's run or without Chromium:
    the picture in the repository stays)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if os.environ.get("GENIXER_DOCS_PICTURE") != "1" or not REPORT.exists() or browser is None:
        return
    if PICTURE.exists() and PICTURE.stat().st_mtime >= REPORT.stat().st_mtime:
        return
    PICTURE.parent.mkdir(exist_ok=True)
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--screenshot={PICTURE}",
           "--window-size=1280,1500", REPORT.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    logging.getLogger("mkdocs").info(f"images/report.png taken again from {REPORT}")
