"""The documentation site builds in strict mode, its reference covers every config field, and every
YAML block of the README and the docs is a config that loads."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from genixer_ray.config import ConfigError, FilterPassConfig, RunConfig, TrainConfig
from genixer_ray.config.loading import config_kind, load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs"))

from hooks import cli_reference, codes_reference, config_reference  # noqa: E402  (docs/ is no package)


def leaf_names(data: dict, prefix: str = "") -> list[str]:
    """The dotted names of a dumped config's leaves (mappings that are values, such as task_mix, stay leaves)."""
    out = []
    for k, v in data.items():
        if isinstance(v, dict) and v and not k.endswith(("task_mix", "storage_options", "task_thresholds", "prompts", "views")):
            out += leaf_names(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}")
    return out


def test_the_site_builds_in_strict_mode(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stderr[-3000:]
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "publish_run" in api and "Raises" in api  # the docstrings, rendered
    layout = (tmp_path / "site" / "guide" / "layout" / "index.html").read_text()
    assert "ContaminationStage" in layout and "stages, in order: decode" in layout  # the worked example, included from the code
    config = (tmp_path / "site" / "reference" / "config" / "index.html").read_text()
    assert "generator.batch_size" in config and "pools.generator.batch_size" in config  # the old layout's table


def test_the_reference_names_every_field_command_and_code():
    page = config_reference()
    for model in (RunConfig, FilterPassConfig, TrainConfig):
        dumped = model().model_dump(mode="json") if model is not TrainConfig else load_config(ROOT / "configs/train.yaml", kind=TrainConfig).model_dump(mode="json")
        missing = [n for n in leaf_names(dumped) if f"`{n}`" not in page]
        assert not missing, (model.__name__, missing)
    assert all(f"`genixer-ray {c}`" in cli_reference() for c in ("generate", "filter", "train", "publish", "verify", "inspect", "export"))
    assert "`contaminated` | skipped" in codes_reference() and "`duplicate_sample`" in codes_reference()


def test_every_yaml_block_in_the_readme_and_docs_is_a_config_that_loads(tmp_path, caplog):
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    blocks = [(p.name, b) for p in pages for b in re.findall(r"```yaml\n(.*?)```", p.read_text(), re.S)]
    assert len(blocks) >= 3
    for i, (page, block) in enumerate(blocks):
        path = tmp_path / f"block{i}.yaml"
        path.write_text(block)
        assert isinstance(yaml.safe_load(block), dict), page
        try:
            with caplog.at_level(logging.WARNING, logger="genixer_ray.config"):
                load_config(str(path), kind=config_kind(path))  # fails naming the field, as show-config would
            assert "layout before components" not in caplog.text, (page, caplog.text)  # the docs show today's layout
        except ConfigError as e:
            # Examples name the reader's own files (/data/...): a file that is not here is the only error allowed.
            problems = str(e).splitlines()[1:]
            assert problems and all("No such file" in p or "does not exist" in p for p in problems), (page, str(e))


def test_every_config_field_says_what_it_does():
    """A new or renamed field without a description fails here: the reference would show it bare."""
    from hooks import _model_of

    bare = []

    def walk(model, prefix: str) -> None:
        for name, field in model.model_fields.items():
            section = _model_of(field.annotation)
            if section is not None:
                walk(section, f"{prefix}{name}.")
            elif not (field.description or "").strip():
                bare.append(f"{prefix}{name}")

    for model in (RunConfig, FilterPassConfig, TrainConfig):
        walk(model, f"{model.__name__}: ")
    assert not bare, bare
