"""Where each filter runs (decided once), and the stage contract checked after every stage; no Ray."""

import pytest

from genixer_ray.actors import StageContractError, run_stages
from genixer_ray.config import FiltersConfig


def filters(**enabled) -> FiltersConfig:
    return FiltersConfig.model_validate({name: {"enabled": True, **opts} for name, opts in enabled.items()})


def test_placement_is_decided_once_for_runs_and_passes():
    both = filters(consistency={}, judge={"model": "tiny"}, clip={"model": "tiny"})
    assert both.placement() == {"consistency": "generator", "judge": "filter_actor", "clip": "filter_actor"}
    assert set(both.placement(filter_pass=True).values()) == {"filter_actor"}  # no generator actor there
    assert list(both.placement()) == ["consistency", "judge", "clip"]  # the order they run in
    on_generator = filters(judge={})
    assert on_generator.placement() == {"judge": "generator"} and not on_generator.needs_filter_actor
    assert both.needs_filter_actor and on_generator.any_enabled and not FiltersConfig().any_enabled


class Dropping:
    def __call__(self, rows):
        return rows[1:]


class Reordering:
    def __call__(self, rows):
        return rows[::-1]


def test_a_stage_that_drops_or_reorders_rows_is_named():
    rows = [{"image_id": "a"}, {"image_id": "b"}]
    assert run_stages([lambda r: [dict(x, seen=True) for x in r]], rows)[1] == {"image_id": "b", "seen": True}
    with pytest.raises(StageContractError, match=r"Dropping returned 1 rows for 2 \(lost \['a'\]\)"):
        run_stages([Dropping()], rows)
    with pytest.raises(StageContractError, match="Reordering returned 2 rows for 2 \\(reordered"):
        run_stages([Reordering()], rows)
