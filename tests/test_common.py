"""algebranets.common: the bad-choice error, parameter names and selection, markdown tables."""

import re

import pytest

from algebranets import common

PARAMS = {"net/~/conv_0": {"w": 1, "b": 2}, "net/~/conv_0_depthwise": {"w": 3},
          "net/~/linear": {"w": [4, 5]}}


def test_check_choice_names_the_value_and_every_choice():
  assert common.check_choice("b", ("a", "b"), "letter") == "b"
  with pytest.raises(ValueError) as e:
    common.check_choice("z", ("a", "b", 3), "letter")
  assert str(e.value) == "Unknown letter 'z'; valid: a, b, 3."
  with pytest.raises(ValueError, match=r"^Unknown norm 'l3'; valid: l1, l2\.$"):
    common.check_choice("l3", {"l1": None, "l2": None}, "norm")  # a dict: its keys


def test_named_leaves_are_the_haiku_paths_in_tree_order():
  named = common.named_leaves(PARAMS)
  assert list(named) == ["net/~/conv_0/b", "net/~/conv_0/w", "net/~/conv_0_depthwise/w",
                         "net/~/linear/w/0", "net/~/linear/w/1"]
  assert named["net/~/conv_0/w"] == (("net/~/conv_0", "w"), 1)
  assert named["net/~/linear/w/1"] == (("net/~/linear", "w", "1"), 5)


def test_name_filter_is_include_and_not_exclude_by_re_search():
  keep = common.name_filter(r"/w$", "depthwise")
  assert [n for n in common.named_leaves(PARAMS) if keep(n)] == ["net/~/conv_0/w"]
  assert common.name_filter(r"conv")("net/~/conv_0_depthwise/w")  # "" excludes nothing


def test_markdown_aligns_integer_columns_right_or_as_told():
  table = common.markdown(["name", "n"], [["a", "1,000"], ["bb", ""]])
  assert table.splitlines() == ["| name |     n |",
                                "|------|------:|",
                                "| a    | 1,000 |",
                                "| bb   |       |"]
  table = common.markdown(["x", "f"], [["a", "0.5"]], align="rl")
  assert table.splitlines() == ["| x | f   |", "|--:|-----|", "| a | 0.5 |"]
  with pytest.raises(ValueError, match=re.escape("align must be one 'l' or 'r' per column")):
    common.markdown(["x"], [["a"]], align="c")
