"""The scoring-stage base: it owns the row loop, a filter supplies only its scores and reasons."""

from __future__ import annotations

from genixer_ray.stages import StageContractError


class ScoringStage:
    """A filter as a stage: :meth:`score` sees only the rows the filter applies to (``ok`` rows by
    default, :meth:`applies`) and returns one dict of the filter's columns per row, in order.

    The base merges them into the batch, every other row passing through unchanged, and raises
    :class:`~genixer_ray.stages.StageContractError` when a filter returns more or fewer results
    than rows, so a row can never be lost or given another row's score.
    """

    name = "scoring"

    def applies(self, row: dict) -> bool:
        """Whether this filter scores ``row`` (default: every ``ok`` row)."""
        return row["status"] == "ok"

    def score(self, rows: list[dict]) -> list[dict]:
        """The filter's columns for each of ``rows``, in order."""
        raise NotImplementedError

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Score the rows this filter applies to; return the whole batch, one row per row."""
        todo = [i for i, r in enumerate(batch) if self.applies(r)]
        scores = self.score([batch[i] for i in todo])
        if len(scores) != len(todo):
            raise StageContractError(f"filter {self.name} returned {len(scores)} results for {len(todo)} rows")
        out = list(batch)
        for i, columns in zip(todo, scores, strict=True):
            out[i] = {**batch[i], **columns}
        return out
