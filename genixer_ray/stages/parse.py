"""The parse stage: each generated text into typed columns for its task (unparseable: an error row)."""

from __future__ import annotations

from genixer_ray.tasks import ParseError, parse_output


class ParseStage:
    """Parse each generated text into typed columns for its task (or the inferred task)."""

    name = "parse"

    def _one(self, row: dict) -> dict:
        if row["status"] != "ok":
            return row
        try:
            p = parse_output(row["text"], row.get("task"))
        except ParseError as e:
            return e.as_row(row, self.name)
        return row | {
            "parsed_task": p.task, "question": p.question, "answer": p.answer, "options": p.options,
            "answer_letter": p.answer_letter, "turns": p.turns, "question_boxes": p.question_boxes,
            "answer_boxes": p.answer_boxes, "points": p.points,
        }

    def __call__(self, batch: list[dict]) -> list[dict]:
        """Parse a batch; unparseable outputs become error rows that keep their raw text."""
        return [self._one(r) for r in batch]
