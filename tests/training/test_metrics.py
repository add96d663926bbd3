"""Metric files and the progress display."""

import io
import json
import logging

from algebranets.training import metrics


def test_jsonl_and_tensorboard_records_and_resume_truncation(tmp_path):
  writer = metrics.MetricWriter(tmp_path)
  for step in (1, 2, 3):
    writer.write(step, "train", {"loss": 1.0 / step})
  writer.write(3, "valid", {"bpc": float("nan")})
  writer.close()
  records = metrics.read_jsonl(tmp_path)
  assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"),
                                                        (3, "train"), (3, "valid")]
  assert records[-1]["bpc"] == "nan"  # non-finite values stay valid JSON
  assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
  # A run resuming from step 2 drops what the abandoned continuation logged after it.
  metrics.MetricWriter(tmp_path, resume_step=2).close()
  assert [r["step"] for r in metrics.read_jsonl(tmp_path)] == [1, 2]
  json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])


def test_plain_log_lines_when_not_a_terminal(caplog):
  progress = metrics.Progress(100, 0, "tokens", interactive=False)
  with caplog.at_level(logging.INFO, logger="algebranets"):
    rates, seconds = progress.update(10, 512, {"loss": 2.0, "bpc": 2.885, "lr": 1e-3})
  assert rates["steps_per_s"] > 0 and rates["tokens_per_s"] == rates["steps_per_s"] * 512
  assert seconds > 0
  assert "step 10/100" in caplog.text and "tokens/s" in caplog.text and "steps/s" in caplog.text
  progress.close()


def test_a_progress_bar_on_a_terminal(monkeypatch):
  stream = io.StringIO()
  monkeypatch.setattr("sys.stderr", stream)
  progress = metrics.Progress(100, 0, "examples", interactive=True)
  progress.update(10, 256, {"loss": 2.0, "top1": 0.5})
  progress.message("step 10 valid: top1 0.5")
  progress.close()
  text = stream.getvalue()
  assert "10/100" in text and "examples/s" in text and "steps/s" in text
  assert "step 10 valid" in text
