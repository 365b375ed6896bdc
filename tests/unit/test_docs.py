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


READERS_FILES = ("No such file", "does not exist", "no model directory")  # how a missing file of the reader's is reported


def shell_commands(text: str) -> list[list[str]]:
    """The commands of a page's bash blocks, continuation lines joined, comments dropped, split as a shell would."""
    import shlex

    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            out += [words] if words else []
    return out


def check_config(config: str | None, overrides: list[str], kind) -> None:
    """``config`` (a repository file; any other name: the defaults) with ``overrides`` loads as ``kind``,
    a reader's missing files (/data/..., /models/...) aside, as the YAML test allows them."""
    path = ROOT / config if config and (ROOT / config).is_file() else None
    try:
        load_config(path, overrides, kind=kind)
    except ConfigError as e:
        problems = str(e).splitlines()[1:]
        assert problems and all(any(m in p for m in READERS_FILES) for p in problems), str(e)


def test_every_command_in_the_readme_and_docs_parses_and_its_settings_load():
    """Each `genixer-ray ...`, `python jobs/...` and `make ...` line of a bash block: the CLI's own
    parser takes it, its config and overrides load as the command would load them (a renamed field
    fails here), the job script and the make target exist."""
    from genixer_ray.cli import build_parser

    parser, targets = build_parser(), set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    kinds = {"generate": RunConfig, "show-config": None, "train": TrainConfig, "filter": FilterPassConfig}
    jobs = {"generate.py": RunConfig, "train_generator.py": TrainConfig, "filter.py": FilterPassConfig}
    checked = 0
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for words in shell_commands(page.read_text()):
            where = f"{page.name}: {' '.join(words)}"
            if words[0].endswith("genixer-ray"):
                if "--help" in words:
                    continue
                args = parser.parse_args(words[1:])  # exits (SystemExit) on an unknown command or option
                if args.command in kinds:
                    config = getattr(args, "config", None)
                    kind = kinds[args.command] or (config_kind(ROOT / config) if config and (ROOT / config).is_file() else RunConfig)
                    check_config(config, args.overrides, kind)
            elif words[0] == "python" and words[1].startswith("jobs/"):
                assert (ROOT / words[1]).is_file(), where
                if (kind := jobs.get(Path(words[1]).name)) is not None:
                    rest = words[3:] if kind is FilterPassConfig else words[2:]  # filter.py RUN CONFIG ...
                    check_config(rest[0], [w for w in rest[1:] if "=" in w], kind)
            elif words[0] == "ray" and "--" in words:
                sub = words[words.index("--") + 1 :]
                assert sub[0] == "python" and (ROOT / sub[1]).is_file(), where
                if (kind := jobs.get(Path(sub[1]).name)) is not None:
                    rest = sub[3:] if kind is FilterPassConfig else sub[2:]
                    check_config(rest[0], [w for w in rest[1:] if "=" in w], kind)
            elif words[0] == "make":
                assert all(t in targets for t in words[1:] if "=" not in t), where
            else:
                continue
            checked += 1
    assert checked >= 20, checked
