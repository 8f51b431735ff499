"""YAML loading that remembers where every key and item came from, for one-line errors.

`load_yaml_with_lines(path)` returns `(data, lines)` where `lines` maps a location tuple such as
`("datasets", 1)` or `("train", "learning_rate")` to its 1-based line in the file. Pydantic error
locations use the same tuples, so a validation error can be reported as `FILE:LINE: field: problem`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from plw.errors import PLWError


_Loader = None


def load_yaml_with_lines(path: str | Path) -> tuple[Any, dict[tuple, int]]:
    import yaml

    global _Loader
    if _Loader is None:
        _Loader = _loader_class()
    path = Path(path)
    if not path.is_file():
        raise PLWError("no such file", file=str(path))
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PLWError(f"invalid YAML: {problem}", file=str(path), line=line)
    if node is None:
        return {}, {(): 1}
    lines: dict[tuple, int] = {}
    data = _convert(node, (), lines, str(path))
    return data, lines


def _loader_class():
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that also reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`)."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Loader


def _convert(node, loc: tuple, lines: dict[tuple, int], file: str) -> Any:
    import yaml

    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                raise PLWError("duplicate key", file=file, line=key_node.start_mark.line + 1,
                               field=format_loc(loc + (key,)))
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, loc + (key,), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, loc + (i,), lines, file) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node) -> Any:
    """Construct one scalar with the safe loader's implicit typing (ints, floats, bools, null)."""
    import yaml

    if not isinstance(node, yaml.ScalarNode):
        raise PLWError("mapping keys must be plain scalars")
    loader = yaml.SafeLoader("")  # tags were resolved by compose; this only constructs
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


def format_loc(loc: tuple) -> str:
    """('datasets', 1, 'source') -> 'datasets[1].source'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def line_of(lines: dict[tuple, int], loc: tuple) -> int | None:
    """The line of the deepest prefix of `loc` that exists in the file."""
    loc = tuple(loc)
    while loc:
        if loc in lines:
            return lines[loc]
        loc = loc[:-1]
    return lines.get(())
