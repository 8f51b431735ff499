"""The instruction record: one normalised example, whatever format it was read from.

Its own module so that the loaders (`records`) and the generators (`synthetic`) both build on it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Record:
    """One instruction instance, normalised from any format."""

    instruction: str = ""
    input: str = ""
    output: str = ""
    prompt: str | None = None            # OpenAI legacy prompt/completion
    completion: str | None = None
    messages: tuple[dict, ...] | None = None  # chat: ({"role": ..., "content": ...}, ...)
    source: str = ""                     # "FILE:LINE", for error messages

    @property
    def format(self) -> str:
        if self.messages is not None:
            return "chat"
        if self.completion is not None:
            return "raw"
        return "alpaca"

    def to_json(self) -> dict:
        """The record as it would be written in its own format."""
        if self.format == "chat":
            return {"messages": [dict(m) for m in self.messages]}
        if self.format == "raw":
            return {"prompt": self.prompt, "completion": self.completion}
        return {"instruction": self.instruction, "input": self.input, "output": self.output}


def record_file(record: Record | None) -> str | None:
    """The file a record came from (its `source` without the line), for error messages."""
    if record is None or not record.source:
        return None
    return record.source.rsplit(":", 1)[0]


def record_line(record: Record | None) -> int | None:
    """The line a record came from, when its `source` names one."""
    if record is None or not record.source:
        return None
    tail = record.source.rsplit(":", 1)[-1]
    return int(tail) if tail.isdigit() else None
