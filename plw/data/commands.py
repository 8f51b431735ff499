"""CLI commands of plw.data: `plw stats` and `plw invert` (registered onto the app by plw.cli).

DATA is a .json/.jsonl file, `builtin:short|long|mixed[?n=N&seed=S]`, or a Hugging Face data
set (name, directory, .parquet/.csv). `--builtin` means DATA = builtin:mixed. The tokenizer
defaults to the built-in BPE (`builtin`); `--tokenizer` takes a hub name, a saved directory or
a SentencePiece `.model` (or a directory holding `tokenizer.model`, e.g. the LLaMA-2 one).
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Optional

import typer

from plw import ui
from plw.errors import PLWError

BUILTIN_DEFAULT = "builtin:mixed"

_DATA_HELP = ("Data: .json/.jsonl file, builtin:short|long|mixed[?n=N&seed=S], or a Hugging Face "
              "data set name/path.")


def register(app: typer.Typer) -> None:
    """Add this package's commands to `app`."""
    app.command("stats", help="Table-1 statistics of instruction data: token lengths, R_g, short/long verdict.")(stats)
    app.command("invert", help="Prompt inversion (paper App. A): rewrite long-completion instances as "
                               "prompt prediction.")(invert)


def _load(data: Optional[str], builtin: bool, fmt: str, column: Optional[list[str]], split: str,
          skip_invalid: bool, console):
    from plw.data.records import parse_columns, read_records

    if data is None:
        if not builtin:
            raise PLWError("give a DATA source or --builtin", field="DATA")
        data = BUILTIN_DEFAULT
    elif builtin:
        raise PLWError("give either a DATA source or --builtin, not both", field="DATA")
    columns = parse_columns(column or [])
    records, report = read_records(data, format=fmt, columns=columns, split=split, skip_invalid=skip_invalid)
    if report.n_skipped:
        console.print("[yellow]warning:[/] " + report.summary().replace("[", r"\["), soft_wrap=True)
        for problem, where in report.examples.items():
            console.print(f"  first '{problem}' at {where}", soft_wrap=True, markup=False)
    return data, records, report


def _tokenizer(name: str):
    from plw.data.tokenizer import load_tokenizer

    return load_tokenizer(name)


def _check_output(path: Path, *, directory: bool = False) -> None:
    """Fail up front (PLWError naming the path, exit 2) if `path` cannot be written: its directory
    (or, with `directory`, the path itself) must be a writable directory or creatable in one."""
    path = Path(path)
    try:
        if path.is_dir() != directory and path.exists():
            raise PLWError("is a directory" if path.is_dir() else "exists and is not a directory", file=str(path))
        ancestor = path if directory else path.parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise PLWError(f"cannot write here: {ancestor} is not a directory", file=str(path))
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise PLWError(f"cannot write here: directory {ancestor} is not writable", file=str(path))
    except OSError as err:
        raise PLWError(f"cannot write here: {err.strerror or err}", file=str(path)) from None


def _check_outputs(*paths) -> None:
    seen = {}
    for path, directory in paths:
        if path is None:
            continue
        _check_output(path, directory=directory)
        key = os.path.abspath(path)
        if key in seen:
            raise PLWError(f"the same path is given for two outputs ({seen[key]})", file=str(path))
        seen[key] = str(path)


def _write_all(files: list) -> None:
    """Write [(path, bytes)] so that all land or none does: every file goes to a temporary file
    beside its target first; only when all are written are they renamed into place (last first)."""
    from plw.io import atomic_path

    try:
        with contextlib.ExitStack() as stack:
            for path, data in files:
                try:
                    tmp = stack.enter_context(atomic_path(path))
                    tmp.write_bytes(data)
                except OSError as err:
                    raise PLWError(f"cannot write: {err.strerror or err}", file=str(path)) from None
    except OSError as err:  # a rename failed
        raise PLWError(f"cannot write: {err.strerror or err}", file=str(getattr(err, "filename", "") or "output")) \
            from None


def _json_bytes(obj) -> bytes:
    from plw.io import json_safe, json_text

    return json_text(json_safe(obj)).encode("utf-8")


def _fmt(x: float, digits: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:,.{digits}f}"


def stats_table(st, title: str):
    from plw.data.stats import FIELDS

    table = ui.table(title=title)
    table.add_column("field")
    table.add_column("mean (std) tokens", justify="right")
    table.add_column("total tokens", justify="right")
    for f in FIELDS:
        table.add_row(f, f"{_fmt(st.mean[f])} ({_fmt(st.std[f])})", f"{sum(st.lengths[f]):,}")
    table.add_section()
    table.add_row("all", "", f"{st.total_tokens:,}")
    table.add_row("R_g (ratio of means)", _fmt(st.ratio, 3), f"{st.verdict}-completion")
    table.add_row("mean per-example ratio", _fmt(st.mean_ratio, 3), "")
    table.add_row("geometric mean ratio", _fmt(st.geo_mean_ratio, 3),
                  f"{st.n_no_ratio} without ratio" if st.n_no_ratio else "")
    return table


def stats(
    data: Optional[str] = typer.Argument(None, help=_DATA_HELP, show_default=False),
    builtin: bool = typer.Option(False, "--builtin", help=f"Use the built-in synthetic data ({BUILTIN_DEFAULT})."),
    tokenizer: str = typer.Option("builtin", "--tokenizer", "-t", help="Tokenizer: builtin, a path or a hub name."),
    template: Optional[str] = typer.Option(None, "--template",
                                           help="Also report templated prompt/completion lengths: alpaca|raw|chat."),
    fmt: str = typer.Option("auto", "--format", help="Record format: auto|alpaca|raw|chat."),
    column: Optional[list[str]] = typer.Option(None, "--column", "-c", help="Column mapping FIELD=COLUMN (repeat)."),
    split: str = typer.Option("train", "--split", help="Split of a Hugging Face data set."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad records (counted per problem)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the statistics as JSON (atomically)."),
    hist: Optional[Path] = typer.Option(None, "--hist", help="Save per-field length histograms (PNG) here."),
) -> None:
    """Mean (std) tokens of instruction, input and completion, total tokens and R_g (paper Table 1).

    Each field is tokenised on its own without special tokens and without a template.
    """

    from plw.data.stats import dataset_stats
    from plw.data.templates import check_template

    console = ui.console(stderr=True)
    out = ui.console()
    if template is not None:
        check_template(template)
    _check_outputs((json_out, False), (hist, True))
    with console.status("loading data and tokenizer", spinner="dots"):
        data, records, report = _load(data, builtin, fmt, column, split, skip_invalid, console)
        tok = _tokenizer(tokenizer)
    with console.status(f"tokenising {len(records):,} records", spinner="dots"):
        st = dataset_stats(records, tok)
        templated = _templated(records, tok, template) if template else None
    out.print(stats_table(st, f"{data} — {st.n:,} records, tokenizer {tokenizer}"))
    if templated:
        out.print(f"templated ({template}, with special tokens): prompt {_fmt(templated['prompt_mean'])}, "
                  f"completion {_fmt(templated['completion_mean'])} tokens per example, "
                  f"R_g {_fmt(templated['ratio'], 3)}")
    payload = {"data": data, "tokenizer": tokenizer, "n_skipped": report.n_skipped,
               "skipped": dict(report.skipped), **st.to_dict()}
    if templated:
        payload["templated"] = templated
    files = []
    if hist is not None:
        from plw.data.stats import histogram_pngs

        pngs = histogram_pngs(st, title=Path(data).name if not data.startswith("builtin:") else data)
        files += [(Path(hist) / f"{f}.png", png) for f, png in pngs.items()]
    if json_out is not None:
        files.append((json_out, _json_bytes(payload)))
    _write_all(files)
    if hist is not None:
        out.print(f"histograms: {', '.join(str(p) for p, _ in files if p != json_out)}")
    if json_out is not None:
        out.print(f"wrote {json_out}")


def _templated(records, tok, template: str) -> dict:
    """Mean prompt / completion tokens as trained (template, BOS and EOS included, no truncation)."""
    from plw.data.encode import tokenize_dataset

    examples, _ = tokenize_dataset(records, tok, template=template, prompt_loss_weight=1.0, max_length=10 ** 9)
    comp = [sum(e["completion_mask"]) for e in examples]
    prompt = [len(e["input_ids"]) - c for e, c in zip(examples, comp)]
    pm, cm = sum(prompt) / len(prompt), sum(comp) / len(comp)
    return {"template": template, "prompt_mean": pm, "completion_mean": cm, "ratio": cm / pm if pm else None}


def invert(
    data: Optional[str] = typer.Argument(None, help=_DATA_HELP, show_default=False),
    output: Path = typer.Option(..., "--output", "-o", help="Output file (.json list or .jsonl), written atomically."),
    target_ratio: Optional[float] = typer.Option(None, "--target-ratio",
                                                 help="Invert just enough instances to bring R_g near this."),
    builtin: bool = typer.Option(False, "--builtin", help=f"Use the built-in synthetic data ({BUILTIN_DEFAULT})."),
    tokenizer: str = typer.Option("builtin", "--tokenizer", "-t", help="Tokenizer: builtin, a path or a hub name."),
    fmt: str = typer.Option("auto", "--format", help="Record format: auto|alpaca|raw."),
    column: Optional[list[str]] = typer.Option(None, "--column", "-c", help="Column mapping FIELD=COLUMN (repeat)."),
    split: str = typer.Option("train", "--split", help="Split of a Hugging Face data set."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad records (counted per problem)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write before/after statistics as JSON."),
) -> None:
    """Rewrite every instance with tokenised R_g > 1 as an original-prompt-prediction task.

    With --target-ratio, choose (deterministically) which instances to invert so the data set's
    R_g lands as close as possible to the target (AlpacaDataMedium 1.0, AlpacaDataTiny 0.042).
    """
    import json

    from plw.data.inversion import invert_records

    console = ui.console(stderr=True)
    out = ui.console()
    if output.suffix not in (".json", ".jsonl"):
        raise PLWError("output must end in .json (a JSON list) or .jsonl", file=str(output), field="output")
    _check_outputs((output, False), (json_out, False))
    if target_ratio is not None and not (math.isfinite(target_ratio) and target_ratio > 0):
        raise PLWError(f"must be a positive number, got {target_ratio}", field="target-ratio")
    with console.status("loading data and tokenizer", spinner="dots"):
        data, records, _ = _load(data, builtin, fmt, column, split, skip_invalid, console)
        tok = _tokenizer(tokenizer)
    with console.status(f"tokenising and inverting {len(records):,} records", spinner="dots"):
        result = invert_records(records, tok, target_ratio=target_ratio)
    out.print(stats_table(result.before, f"before: {data} ({len(records):,} records)"))
    out.print(stats_table(result.after, f"after: {result.n_inverted:,} of {len(records):,} instances inverted"))
    if target_ratio is not None:
        gap = abs(result.after.ratio - target_ratio) / target_ratio
        out.print(f"target R_g {target_ratio:g}: reached {result.after.ratio:.4f} ({gap:.1%} off)")
    # A record with an empty prompt is never inverted, and has no Alpaca form (an Alpaca record needs
    # an instruction): it is left out of the written file (said so, and counted in the report) unless
    # every record is one, so that the file always loads back.
    left_out = set(result.empty_prompt) if len(result.empty_prompt) < len(result.records) else set()
    if left_out:
        from rich.markup import escape

        first = result.records[min(left_out)].source
        console.print(f"[yellow]warning:[/] {len(left_out):,} record(s) with an empty prompt were not inverted and "
                      + escape(f"are left out of {output}: an Alpaca record needs an instruction (first at {first})"),
                      soft_wrap=True, highlight=False)
    rows = [r.to_json() for i, r in enumerate(result.records) if i not in left_out]
    if output.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    else:
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    files = [(output, text.encode("utf-8"))]
    if json_out is not None:
        files.append((json_out, _json_bytes({"data": data, "tokenizer": tokenizer, "output": str(output),
                                             **result.to_dict(), "n_written": len(rows),
                                             "n_left_out": len(left_out)})))
    _write_all(files)
    out.print(f"wrote {output}")
