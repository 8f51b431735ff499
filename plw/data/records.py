"""Instruction records: load Alpaca / OpenAI-legacy / chat data from any source into `Record`s.

Sources: a local `.json` (a JSON list of records, or JSON Lines) / `.jsonl` file, a built-in
synthetic data set (`builtin:short`, `builtin:long`, `builtin:mixed`, optionally
`?n=...&seed=...`), a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (pick
the split with `split`), or anything `datasets.load_dataset` accepts (hub name, local directory,
`.parquet`/`.csv` file). The same options everywhere (CLI flags, `TrainConfig` keys, sweep dataset
keys): `format`, `columns` (plw field -> the data's column; a column that is not there is named),
`split`, `skip_invalid`. An empty output (the original Alpaca data has some) is a valid record:
its completion is the EOS alone. Stanford Alpaca's seed tasks (`seed_tasks.jsonl`: an
instruction with nested `instances` of input/output) load as one Alpaca record per instance.

Every bad record raises `PLWError(file=, line=, field=)`; with `skip_invalid=True` bad records
are skipped and counted per problem instead (a warning says how many, never silently).
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import parse_qs

from plw.data.schema import Record
from plw.errors import PLWError, first_line

FORMATS = ("alpaca", "raw", "chat")
ROLES = ("system", "user", "assistant", "tool")
BUILTIN_PREFIX = "builtin:"
BUILTIN_NAMES = {"short": 0.0, "long": 1.0, "mixed": 0.5}  # name -> long-completion fraction
BUILTIN_DEFAULT_N = 1000

# Fields of each format, as (name, required). The completion field must be non-empty.
_FIELDS = {
    "alpaca": (("instruction", True), ("input", False), ("output", True)),
    "raw": (("prompt", True), ("completion", True)),
    "chat": (("messages", True),),
}
_COMPLETION_FIELD = {"alpaca": "output", "raw": "completion"}


@dataclass
class LoadReport:
    """What `read_records` saw: kept records and skipped ones per problem."""

    n_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)  # problem -> first "FILE:LINE: field"

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        parts = ", ".join(f"{n} × {p}" for p, n in self.skipped.most_common())
        return f"skipped {self.n_skipped} of {self.n_read} invalid records ({parts})"


class SkippedRecordsWarning(UserWarning):
    """Emitted by `load_records(skip_invalid=True)` when records were skipped."""


def load_records(source: str | Path, *, format: str = "auto", columns: dict | None = None,
                 split: str = "train", skip_invalid: bool = False) -> list[Record]:
    """Load and validate records from a file, a built-in data set or a Hugging Face data set."""
    records, report = read_records(source, format=format, columns=columns, split=split,
                                   skip_invalid=skip_invalid)
    if report.n_skipped:
        warnings.warn(report.summary(), SkippedRecordsWarning, stacklevel=2)
    return records


def read_records(source: str | Path, *, format: str = "auto", columns: dict | None = None,
                 split: str = "train", skip_invalid: bool = False) -> tuple[list[Record], LoadReport]:
    """`load_records` that also returns the `LoadReport` (for the CLI)."""
    if format not in ("auto",) + FORMATS:
        raise PLWError(f"unknown format {format!r}; expected auto, alpaca, raw or chat", field="format")
    columns = _check_columns(columns)
    text = str(source)
    if text.startswith(BUILTIN_PREFIX):
        recs = builtin_records(text)
        return recs, LoadReport(n_read=len(recs))
    path = Path(text)
    if path.suffix in (".json", ".jsonl"):
        if not path.is_file():
            raise PLWError("no such file", file=text)
        name, start, stop = split_slice(split)
        if name != "train":
            raise PLWError(f"a JSON file has one split, 'train' (optionally sliced: train[:100]), "
                           f"not {split!r}", file=text, field="split")
        rows = itertools.islice(_iter_json_file(path), start, stop)
    elif path.suffix in (".txt", ".md", ".yaml", ".yml", ".tsv"):
        raise PLWError("unsupported data file; expected .json, .jsonl, .parquet, .csv, a builtin: name "
                       "or a Hugging Face data set", file=text)
    else:
        rows = _iter_hf_dataset(text, split, columns)
    return _validate_rows(rows, format=format, columns=columns, skip_invalid=skip_invalid, name=text)


# --------------------------------------------------------------------------------------------
# Built-in synthetic data

def builtin_records(spec: str) -> list[Record]:
    """`builtin:NAME[?n=N&seed=S]` -> the deterministic synthetic data set."""
    from plw.data.synthetic import generate

    body = spec[len(BUILTIN_PREFIX):]
    name, _, query = body.partition("?")
    if name not in BUILTIN_NAMES:
        raise PLWError(f"unknown built-in data set {name!r}; expected one of "
                       f"{', '.join(BUILTIN_PREFIX + n for n in BUILTIN_NAMES)}", file=spec)
    params = {"n": BUILTIN_DEFAULT_N, "seed": 0}
    for key, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if key not in params:
            raise PLWError(f"unknown parameter {key!r}; expected n or seed", file=spec, field=key)
        try:
            params[key] = int(values[-1])
        except ValueError:
            raise PLWError(f"expected an integer, got {values[-1]!r}", file=spec, field=key) from None
    if params["n"] < 1:
        raise PLWError("must be at least 1", file=spec, field="n")
    return generate(params["n"], seed=params["seed"], long_fraction=BUILTIN_NAMES[name])


# --------------------------------------------------------------------------------------------
# Raw rows: (file, line, object-or-error)

class _RowError:
    """A row that could not even be parsed (bad JSON, bad bytes)."""

    def __init__(self, problem: str, field: str):
        self.problem, self.field = problem, field


def _iter_json_file(path: Path) -> Iterator[tuple[str, int, Any]]:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark
        raw = raw[3:]
    first = raw.lstrip()[:1]
    if path.suffix == ".json" and first == b"[":
        yield from _iter_json_list(path, raw)
        return
    if path.suffix == ".json" and first != b"{" and first:
        line = raw[:len(raw) - len(raw.lstrip())].count(b"\n") + 1
        yield str(path), line, _RowError("expected a JSON list of records or JSON Lines", "json")
        return
    # JSON Lines (also accepted in a .json file that starts with an object)
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as err:
            yield str(path), lineno, _RowError(f"not valid UTF-8 (byte {err.start + 1} of the line)", "encoding")
            continue
        try:
            yield str(path), lineno, json.loads(text)
        except json.JSONDecodeError as err:
            yield str(path), lineno, _RowError(f"invalid JSON: {err.msg} (column {err.colno})", "json")


def _iter_json_list(path: Path, raw: bytes) -> Iterator[tuple[str, int, Any]]:
    """Elements of a top-level JSON list, each with the line it starts on."""
    file = str(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        # A whole-file format: one bad byte makes the file unreadable, so stop here.
        yield file, raw[:err.start].count(b"\n") + 1, _RowError("not valid UTF-8", "encoding")
        return
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)

    def skip_ws(i: int) -> int:
        while i < n and text[i] in " \t\r\n":
            i += 1
        return i

    def line_of(i: int) -> int:
        return text.count("\n", 0, i) + 1

    pos = skip_ws(pos)
    if pos < n and text[pos] == "]":
        if skip_ws(pos + 1) != n:
            yield file, line_of(skip_ws(pos + 1)), _RowError("invalid JSON: extra data after the list", "json")
        return
    while True:
        pos = skip_ws(pos)
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            yield file, err.lineno, _RowError(f"invalid JSON: {err.msg} (column {err.colno})", "json")
            return
        yield file, line_of(pos), obj
        pos = skip_ws(end)
        if pos < n and text[pos] == ",":
            pos += 1
            continue
        if pos < n and text[pos] == "]":
            rest = skip_ws(pos + 1)
            if rest != n:
                yield file, line_of(rest), _RowError("invalid JSON: extra data after the list", "json")
            return
        problem = "unterminated list" if pos >= n else f"expected ',' or ']' , got {text[pos]!r}"
        yield file, line_of(min(pos, n - 1)), _RowError(f"invalid JSON: {problem}", "json")
        return


def _iter_hf_dataset(name: str, split: str, columns: dict) -> Iterator[tuple[str, int, Any]]:
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise PLWError("the `datasets` package is needed for Hugging Face data sets", file=name)
    path = Path(name)
    try:
        if path.is_file() and path.suffix in (".parquet", ".csv"):
            ds = datasets.load_dataset(path.suffix[1:], data_files=str(path), split=split)
        elif path.is_dir() and _saved_to_disk(path):
            ds = _load_from_disk(path, split)
        else:
            ds = datasets.load_dataset(name, split=split)
    except PLWError:
        raise
    except Exception as err:  # datasets raises many types for a missing/unreadable data set
        raise PLWError(f"cannot load data set: {first_line(err)}", file=name) from None
    where = f"{name}[{split}]"
    missing = [(ours, theirs) for ours, theirs in columns.items() if theirs not in ds.column_names]
    if missing:
        ours, theirs = missing[0]
        raise PLWError(f"column {theirs!r} (mapped to {ours}) is not in the data set; its columns: "
                       f"{', '.join(ds.column_names)}", file=where, field="columns")
    for i, row in enumerate(ds, start=1):  # "line" = 1-based row number
        yield where, i, row


_SPLIT = re.compile(r"^\s*(?P<name>[\w.-]+)\s*(?:\[\s*(?P<start>\d*)\s*:\s*(?P<stop>\d*)\s*\])?\s*$")


def split_slice(split: str) -> tuple[str, int | None, int | None]:
    """`"train"` -> ("train", None, None); `"train[:128]"` -> ("train", None, 128) (the Hugging Face
    slicing syntax, also for JSON files and save_to_disk folders: the first 128 records)."""
    m = _SPLIT.match(split)
    if not m:
        raise PLWError(f"expected a split name, optionally sliced (train[:100], train[100:200]), got {split!r}",
                       field="split")
    start, stop = m["start"], m["stop"]
    return m["name"], int(start) if start else None, int(stop) if stop else None


def _saved_to_disk(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()


def _load_from_disk(path: Path, split: str):
    import datasets

    name, start, stop = split_slice(split)
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if name not in ds:
            raise PLWError(f"no split {name!r} in this DatasetDict; its splits: {', '.join(ds)} "
                           "(choose one with --split / split:)", file=str(path), field="split")
        ds = ds[name]
    if start is not None or stop is not None:
        ds = ds.select(range(len(ds))[start:stop])
    return ds


# --------------------------------------------------------------------------------------------
# Validation

def _check_columns(columns: dict | None) -> dict:
    if not columns:
        return {}
    known = {f for fields in _FIELDS.values() for f, _ in fields}
    for ours, theirs in columns.items():
        if ours not in known:
            raise PLWError(f"unknown field {ours!r} in column mapping; expected one of {', '.join(sorted(known))}",
                           field="columns")
        if not isinstance(theirs, str) or not theirs:
            raise PLWError(f"column for {ours!r} must be a non-empty string", field="columns")
    return dict(columns)


def _detect(obj: dict) -> str | None:
    if "messages" in obj:
        return "chat"
    if "completion" in obj or "prompt" in obj:
        return "raw"
    if "output" in obj or "instruction" in obj:
        return "alpaca"
    return None


def _validate_rows(rows: Iterable[tuple[str, int, Any]], *, format: str, columns: dict,
                   skip_invalid: bool, name: str) -> tuple[list[Record], LoadReport]:
    report = LoadReport()
    records: list[Record] = []
    fmt = None if format == "auto" else format
    last_file = None
    for file, line, obj in rows:
        last_file = file
        report.n_read += 1
        try:
            if isinstance(obj, _RowError):
                raise PLWError(obj.problem, file=file, line=line, field=obj.field)
            if columns:
                obj = _apply_columns(obj, columns, file, line)
            if not isinstance(obj, dict):
                raise PLWError(f"expected a JSON object, got {_type_name(obj)}", file=file, line=line, field="record")
            if "instances" in obj and "output" not in obj and fmt in (None, "alpaca"):
                fmt = "alpaca"
                records.extend(_seed_task_records(obj, file, line))
                continue
            detected = _detect(obj)
            if fmt is None:
                if detected is None:
                    raise PLWError("unrecognised record: expected instruction/output (alpaca), "
                                   "prompt/completion (raw) or messages (chat)", file=file, line=line,
                                   field="record")
                fmt = detected
            elif detected is not None and detected != fmt and format == "auto":
                raise PLWError(f"{detected} record in a {fmt} data set", file=file, line=line, field="record")
            records.append(_make_record(obj, fmt, f"{file}:{line}", file, line))
        except PLWError as err:
            if not skip_invalid:
                raise
            problem = f"{err.field}: {_problem_kind(err.problem)}"
            report.skipped[problem] += 1
            report.examples.setdefault(problem, f"{err.file}:{err.line}")
    if not records:
        if report.n_read == 0:
            raise PLWError("no records", file=name, line=1, field="data")
        raise PLWError(f"no valid records ({report.summary()})", file=last_file, line=1, field="data")
    return records, report


def _problem_kind(problem: str) -> str:
    """Group problems for the skip report (drop per-record detail such as column numbers)."""
    return problem.split(" (")[0].split(": ")[0]


def _apply_columns(obj: Any, columns: dict, file: str, line: int) -> Any:
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    for ours, theirs in columns.items():
        if theirs in obj:
            out[ours] = obj[theirs]
        else:
            raise PLWError(f"column {theirs!r} (mapped to {ours}) is not in the record; its keys: "
                           f"{', '.join(map(str, obj)) or 'none'}", file=file, line=line, field="columns")
    return out


def _seed_task_records(obj: dict, file: str, line: int) -> list[Record]:
    """Stanford Alpaca's seed tasks: one instruction with nested `instances` of input/output ->
    one Alpaca record per instance."""
    instances = obj["instances"]
    if not isinstance(instances, list) or not instances:
        raise PLWError(f"expected a non-empty list of {{input, output}} objects, got {_type_name(instances)}"
                       " (Stanford seed-task format)", file=file, line=line, field="instances")
    out = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise PLWError(f"expected an object, got {_type_name(inst)}", file=file, line=line,
                           field=f"instances[{i}]")
        flat = {"instruction": obj.get("instruction"), "input": inst.get("input", ""), "output": inst.get("output")}
        try:
            out.append(_make_record(flat, "alpaca", f"{file}:{line}", file, line))
        except PLWError as err:
            field = err.field if err.field == "instruction" else f"instances[{i}].{err.field}"
            raise PLWError(err.problem, file=file, line=line, field=field) from None
    return out


def _type_name(v: Any) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(v), type(v).__name__)


def _string(obj: dict, name: str, required: bool, file: str, line: int, *, nonempty: bool = False,
            problem_empty: str = "empty") -> str:
    if name not in obj or (obj[name] is None and not required):
        if required:
            raise PLWError("missing", file=file, line=line, field=name)
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise PLWError(f"expected a string, got {_type_name(value)}", file=file, line=line, field=name)
    _check_unicode(value, file, line, name)
    if nonempty and not value.strip():
        raise PLWError(problem_empty, file=file, line=line, field=name)
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_unicode(value: str, file: str, line: int, field: str) -> None:
    """JSON's \\uXXXX escapes can encode a lone surrogate, which is not a Unicode character: it passes
    json.loads but crashes tokenizers and UTF-8 writers later, so reject it here, with its location."""
    if _SURROGATE.search(value):
        raise PLWError("not valid Unicode (lone surrogate)", file=file, line=line, field=field)


def _make_record(obj: dict, fmt: str, source: str, file: str, line: int) -> Record:
    if fmt == "alpaca":
        return Record(
            instruction=_string(obj, "instruction", True, file, line, nonempty=True, problem_empty="empty instruction"),
            input=_string(obj, "input", False, file, line),
            output=_string(obj, "output", True, file, line),  # may be empty: the completion is the EOS alone
            source=source)
    if fmt == "raw":
        return Record(prompt=_string(obj, "prompt", True, file, line),
                      completion=_string(obj, "completion", True, file, line),
                      source=source)
    return Record(messages=_messages(obj, file, line), source=source)


def _messages(obj: dict, file: str, line: int) -> tuple[dict, ...]:
    if "messages" not in obj:
        raise PLWError("missing", file=file, line=line, field="messages")
    msgs = obj["messages"]
    if not isinstance(msgs, list):
        raise PLWError(f"expected a list of messages, got {_type_name(msgs)}", file=file, line=line, field="messages")
    if not msgs:
        raise PLWError("empty conversation", file=file, line=line, field="messages")
    out = []
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise PLWError(f"expected an object, got {_type_name(m)}", file=file, line=line, field=where)
        role = m.get("role")
        if role is None:
            raise PLWError("missing", file=file, line=line, field=f"{where}.role")
        if role not in ROLES:
            raise PLWError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}", file=file, line=line,
                           field=f"{where}.role")
        content = m.get("content")
        if content is None:
            raise PLWError("missing", file=file, line=line, field=f"{where}.content")
        if not isinstance(content, str):
            raise PLWError(f"expected a string, got {_type_name(content)}", file=file, line=line,
                           field=f"{where}.content")
        _check_unicode(content, file, line, f"{where}.content")
        out.append({"role": role, "content": content, **_message_weight(m, role, file, line, where)})
    assistant = [i for i, m in enumerate(out) if m["role"] == "assistant"]
    if not assistant:
        raise PLWError("no assistant turn", file=file, line=line, field="messages")
    if all(out[i].get("weight") == 0 for i in assistant):
        raise PLWError("every assistant turn has weight 0: nothing to train on", file=file, line=line,
                       field="messages")
    return tuple(out)


def _message_weight(m: dict, role: str, file: str, line: int, where: str) -> dict:
    """OpenAI's chat format: `weight` 0 on an assistant turn means "do not train on it" (it is then
    context, weighted like the prompt); 1 (the default) trains on it. Kept only when 0."""
    if "weight" not in m:
        return {}
    w = m["weight"]
    if role != "assistant":
        raise PLWError("weight is allowed on assistant messages only", file=file, line=line, field=f"{where}.weight")
    if isinstance(w, bool) or w not in (0, 1):
        raise PLWError(f"expected 0 or 1, got {w!r}", file=file, line=line, field=f"{where}.weight")
    return {"weight": 0} if w == 0 else {}


def parse_columns(specs: Iterable[str]) -> dict:
    """CLI helper: ["instruction=question", "output=answer"] -> {"instruction": "question", ...}."""
    out = {}
    for spec in specs:
        ours, sep, theirs = spec.partition("=")
        if not sep or not ours or not theirs:
            raise PLWError(f"expected FIELD=COLUMN, got {spec!r}", field="column")
        out[ours.strip()] = theirs.strip()
    return _check_columns(out)
