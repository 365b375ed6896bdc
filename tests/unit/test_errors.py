"""One error family: every error the package raises on purpose belongs to one branch, and the
command line maps branches (not lists of classes) to exit statuses; no Ray."""

import pytest

from genixer_ray import errors
from genixer_ray.annotations import ConversionError, Skip
from genixer_ray.cli import main
from genixer_ray.config import ConfigError
from genixer_ray.convert_checkpoint import CheckpointLayoutError
from genixer_ray.engines.base import EngineError
from genixer_ray.images import DecodeError
from genixer_ray.inputs import InputError
from genixer_ray.stages import StageContractError
from genixer_ray.store import StorageError
from genixer_ray.tasks import ParseError


@pytest.mark.parametrize(
    ("cls", "branch", "exit_code"),
    [
        (ConfigError, errors.UserError, 2), (InputError, errors.UserError, 2), (ConversionError, errors.UserError, 2),
        (CheckpointLayoutError, errors.UserError, 2), (errors.NotARunError, errors.UserError, 2),
        (errors.StoreUnusableError, errors.UserError, 2),
        (EngineError, errors.RunFailed, 1), (StageContractError, errors.RunFailed, 1), (StorageError, errors.RunFailed, 1),
    ],
)
def test_every_error_has_one_family_and_its_exit_status(cls, branch, exit_code):
    assert issubclass(cls, errors.GenixerError) and issubclass(cls, branch) and cls.exit_code == exit_code
    # Callers that caught the built-in classes before still do.
    assert issubclass(cls, ValueError if branch is errors.UserError else RuntimeError)


@pytest.mark.parametrize("cls", [DecodeError, ParseError, Skip])
def test_row_errors_share_one_shape_that_becomes_an_error_row(cls):
    e = cls("some_code", "what went wrong")
    assert isinstance(e, errors.RowError) and (e.code, e.message) == ("some_code", "what went wrong")
    row = e.as_row({"image_id": "a", "sample": 0, "status": "ok"}, "parse")
    assert row == {"image_id": "a", "sample": 0, "status": "error", "error_stage": "parse",
                   "error_code": "some_code", "error_message": "what went wrong"}


def test_the_command_line_maps_families_to_exit_statuses(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nothing")]) == 2  # NotARunError: the user named the wrong folder
    assert "error: no run at" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path), "--storage-options", "[1]"]) == 2
    assert "--storage-options must be a JSON object" in capsys.readouterr().err
    assert main(["show-config", "engines.generator.backend=tensorrt"]) == 2
    assert "engines.generator.backend" in capsys.readouterr().err



def test_show_config_prints_each_kind_of_bundled_config_as_its_kind(capsys):
    """`show-config` detects a filter pass or training config from its keys (it read both as run
    configs before: a filter pass shown as the demo run, a training config refused)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for name, kind, first in (("filter.yaml", "filter pass", "name: local\nfilters:"), ("filter-gpu.yaml", "filter pass", "name: paper-judge\nfilters:"),
                              ("train.yaml", "training", "name: genixer-tiny")):
        assert main(["show-config", str(root / "configs" / name)]) == 0, name
        out = capsys.readouterr()
        assert f"# a {kind} configuration (detected" in out.err and out.out.startswith(first), (name, out)
    assert main(["show-config", str(root / "configs/filter.yaml"), "--kind", "train"]) == 2  # named, and wrong
    assert "invalid training configuration" in capsys.readouterr().err


def test_a_setting_that_would_be_ignored_is_an_error_naming_it():
    """A filter pass's actors take pools.filters.batch_size rows per call: an engine's batch_size
    was once silently ignored there; it is refused before any work, saying where the setting goes."""
    from genixer_ray.config import FilterPassConfig, build_config

    with pytest.raises(ConfigError, match="engines.judge.batch_size: Extra inputs.*batch_size belongs under .*pools.decode or pools.filters"):
        build_config({"engines": {"judge": {"batch_size": 4}}}, kind=FilterPassConfig)
    # The same in the layout before components (a pass's one engine section), said the same way.
    with pytest.raises(ConfigError, match="engine: .*an old section.*batch_size belongs under .*pools.decode or pools.filters"):
        build_config({"engine": {"batch_size": 4}}, kind=FilterPassConfig)
    assert build_config({"engine": {"max_num_seqs": 4}, "filters": {"batch_size": 4}}, kind=FilterPassConfig).pools.filters.batch_size == 4
