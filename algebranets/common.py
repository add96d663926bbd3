"""Helpers every floor of the package shares, written once: the error for a bad choice,
parameter names and selection by name, markdown tables.

  check_choice   the one dialect of a bad value among fixed choices (house style 14):
                 "Unknown <what> '<value>'; valid: a, b." -- the value named, every choice listed
  key_name       the name of one entry of a jax tree path (a dict key, an attribute, an index)
  named_leaves   {"module/.../name": (keys, leaf)} of a Haiku params-like tree, in tree order;
                 a parameter's name is its Haiku path, e.g. "resnet/~/stage_0/conv_0/w"
  name_filter    a parameter-name predicate from include / exclude regexes (re.search): the
                 one rule that selects parameters by name for weight decay and for pruning
                 (house style 13: by name, never by ndim)
  markdown       a markdown table; number columns right-aligned

The standard library only (jax inside `named_leaves`), so that every module may import this
one: also the data pipelines and the experiment launchers, which run without importing jax.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterable, Optional, Sequence


def check_choice(value, choices: Iterable, what: str):
  """`value` if it is one of `choices`; else ValueError "Unknown what 'value'; valid: a, b."."""
  choices = tuple(choices)
  if value not in choices:
    raise ValueError(f"Unknown {what} {value!r}; valid: {', '.join(map(str, choices))}.")
  return value


def key_name(key) -> str:
  """The name of one jax tree path entry: DictKey.key, GetAttrKey.name, SequenceKey.idx."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path) -> str:
  """"module/.../name" of a jax tree path."""
  return "/".join(key_name(k) for k in path)


def named_leaves(tree) -> dict[str, tuple[tuple[str, ...], Any]]:
  """{"module/.../name": (keys, leaf)} of a nested-dict pytree, in tree order."""
  import jax  # pylint: disable=g-import-not-at-top  (see the module docstring)
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    keys = tuple(key_name(k) for k in path)
    out["/".join(keys)] = (keys, leaf)
  return out


def name_filter(include: str, exclude: str = "") -> Callable[[str], bool]:
  """Whether a parameter name matches `include` and not `exclude` (re.search; "" excludes
  nothing)."""
  inc = re.compile(include)
  exc = re.compile(exclude) if exclude else None
  return lambda name: bool(inc.search(name)) and not (exc and exc.search(name))


def markdown(header: Sequence[str], rows: Sequence[Sequence[Any]],
             align: Optional[str] = None) -> str:
  """A markdown table of `rows` under `header`.

  Args:
    header, rows: the cells (any values; printed with str).
    align: one letter per column, "l" or "r"; None right-aligns the columns whose non-blank
      cells are all integers (commas allowed) and left-aligns the others.
  """
  cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
  widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
  if align is None:
    right = [len(cells) > 1 and all(r[i].replace(",", "").isdigit() for r in cells[1:] if r[i])
             for i in range(len(header))]
  else:
    if len(align) != len(header) or set(align) - {"l", "r"}:
      raise ValueError(f"align must be one 'l' or 'r' per column ({len(header)}), got {align!r}")
    right = [a == "r" for a in align]

  def line(r):
    return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                             for c, w, num in zip(r, widths, right)) + " |"

  rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                        for w, num in zip(widths, right)) + "|"
  return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])
