"""scripts/benchmark_ab.py: the "before" side really runs the earlier library, both sides the
same benchmark code, and a bad revision stops with one clear message."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _git_ok():
  return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"],
                        capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _git_ok(), reason="needs the repository's git history")


@pytest.fixture
def ab(tmp_path, monkeypatch):
  monkeypatch.syspath_prepend(str(ROOT / "scripts"))
  import benchmark_ab  # pylint: disable=g-import-not-at-top
  saved = list(sys.path)
  yield benchmark_ab, tmp_path
  sys.path[:] = saved
  stale = [m for m in sys.modules if m.startswith(benchmark_ab.BEFORE) or m.endswith("_before")]
  for name in stale:
    del sys.modules[name]


def test_the_before_side_imports_the_extracted_library_not_the_installed_one(ab):
  benchmark_ab, tmp_path = ab
  benchmark_ab.extract_library("HEAD", str(tmp_path))
  bo = benchmark_ab.load_against_before(benchmark_ab.benchmark_ops)
  bm = benchmark_ab.load_against_before(benchmark_ab.benchmark_models)
  for module in (bo.ops, bo.algebras, bm.resnet, bm.txl, bm.algebras_lib):
    assert module.__name__.startswith("algebranets_before."), module.__name__
    assert pathlib.Path(module.__file__).is_relative_to(tmp_path), module.__file__
  # The installed library is untouched and distinct.
  assert benchmark_ab.benchmark_ops.ops.__name__ == "algebranets.ops"
  assert bo.ops is not benchmark_ab.benchmark_ops.ops


def test_a_group_times_both_sides_of_every_row(ab):
  benchmark_ab, tmp_path = ab
  benchmark_ab.extract_library("HEAD", str(tmp_path))
  libs = {"before": (benchmark_ab.load_against_before(benchmark_ab.benchmark_models),
                     benchmark_ab.load_against_before(benchmark_ab.benchmark_ops)),
          "after": (benchmark_ab.benchmark_models, benchmark_ab.benchmark_ops)}
  args = benchmark_ab.benchmark_models.parser().parse_args(["--repeats", "2"])
  args.conv_width, args.conv_batch, args.image, args.algebras = 8, 1, 4, "m2r"
  (cases,) = benchmark_ab.conv_cases(args).values()
  times = benchmark_ab.run_group(cases, libs, args)
  assert set(times) == {"r", "m2r"}
  assert all(np.isfinite(t) and t > 0 for pair in times.values() for t in pair)


def test_a_bad_revision_or_bench_stops_with_one_message(ab, capsys):
  benchmark_ab, _ = ab
  with pytest.raises(SystemExit) as e:      # sys.exit(message): one line, no traceback
    benchmark_ab.main(["--before", "no-such-rev"])
  assert "no-such-rev" in str(e.value.code) and "commit" in str(e.value.code)
  with pytest.raises(SystemExit) as e:      # argparse's error: usage and the choices
    benchmark_ab.main(["--before", "HEAD", "--ab", "nope"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "nope" in err and "stage3" in err and "Traceback" not in err
