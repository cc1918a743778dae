"""r1zero-report on a synthetic run directory: PNGs that are real pictures, one self-contained escaped HTML page."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from r1zero.report import highlight, main, make_report, pick_samples, read_jsonl, series

STEPS = 40
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _metrics_row(step: int) -> dict:
    late = step > 20  # reflection and accuracy jump together at step 21
    return {
        "step": step,
        "time": 1000.0 + step,
        "reward/mean": 0.2 + 0.5 * late + 0.01 * math.sin(step),
        "reward/accuracy": 0.1 + 0.5 * late,
        "rollout/length/mean": 50.0 + step,
        "rollout/length/p10": 30.0 + step,
        "rollout/length/p90": 80.0 + step,
        "rollout/length/mean_correct": 60.0 + step,
        "rollout/length/mean_incorrect": 45.0 + step,
        "aha/reflection_per_1k_tokens": 1.0 + 4.0 * late,
        "aha/reflection_frac": 0.1 + 0.4 * late,
        "aha/count/wait": float(step >= 3),
        "aha/count/aha": float(step >= 25),
        "aha/count/mistake": 0.0,
        "loss/entropy": 2.0 - step / 40,
        "loss/approx_kl_old": 0.001 * step,
        "perf/rollout_s": 3.0,
        "perf/reward_s": 0.1,
        "perf/learner_s": 1.5 + step / 40,
        "perf/sync_s": 0.2,
    }


def _write_run(run_dir: Path) -> None:
    rows = [_metrics_row(s) for s in range(1, STEPS + 1)]
    rows.insert(0, {"step": 0, "time": 999.0, "eval/accuracy": 0.05})
    rows.append({"step": STEPS, "time": 2000.0, "eval/accuracy": 0.5})
    lines = [json.dumps(r) for r in rows] + ['{"step": 41, "reward/me']  # a line cut by a crash
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    samples = []
    for step in (5, 20, 40):
        for i in range(2):
            text = f"<think>step {step} sample {i}: wait, let me check</think><answer>{i}</answer>"
            if step == 20 and i == 1:
                text = "<think>Wait <script>alert('x')</script> & done</think><answer>1</answer>"
            samples.append(
                {"step": step, "prompt": "User: <b>q</b> Assistant: <think>", "completion": text, "answer": "1",
                 "reward": float(i), "correct": float(i), "length": 30, "finish_reason": "stop"}
            )  # fmt: skip
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))


def _check_png(data: bytes, path: Path) -> None:
    import matplotlib.image as mpimg

    assert data.startswith(PNG_SIGNATURE), path
    img = mpimg.imread(path)
    height, width = img.shape[:2]
    assert width > 100 and height > 100, (path, img.shape)
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10, f"{path} is (nearly) one colour"


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    _write_run(tmp_path)
    return tmp_path


def test_report_writes_pngs_and_self_contained_html(run_dir: Path) -> None:
    html_path = make_report(run_dir, window=5)
    out = run_dir / "report"
    assert html_path == out / "report.html"
    names = ["reward", "length", "reflection", "entropy_kl", "time"]
    for name in names:
        _check_png((out / f"{name}.png").read_bytes(), out / f"{name}.png")
    page = html_path.read_text()
    embedded = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(embedded) == len(names)
    assert all(base64.b64decode(e).startswith(PNG_SIGNATURE) for e in embedded)
    assert "skipped" not in page
    # first-seen table: wait at step 3, aha at 25; mistake never (count 0)
    assert "<td>wait</td><td>3</td>" in page and "<td>aha</td><td>25</td>" in page
    assert "<td>mistake</td>" not in page
    assert "<td>reward/mean</td>" in page  # the first / last summary table
    # the jump at step 21 is an aha candidate (window 5: step 21 is the first whose next 5 steps are all late)
    assert re.search(r"<td>21</td><td>aha/reflection_frac", page)
    # hostile model text: escaped, never markup; reflection words marked
    assert "<script>" not in page and "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; done" in page
    assert '<mark title="wait">Wait</mark>' in page
    assert "&lt;b&gt;q&lt;/b&gt;" in page  # the prompt, escaped


def test_missing_metrics_skip_plots_with_a_note(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "reward/mean": 0.5, "loss/entropy": None}) + "\n"
    )
    page = make_report(tmp_path, tmp_path / "out").read_text()
    assert (tmp_path / "out" / "reward.png").exists()
    for name in ("length", "reflection", "entropy_kl", "time"):
        assert not (tmp_path / "out" / f"{name}.png").exists()
        assert f"{name}: skipped" in page
    assert "no samples.jsonl rows" in page


def test_cli_main(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main([str(run_dir), "--out", str(run_dir / "cli")])
    assert capsys.readouterr().out.strip().endswith("report.html")
    with pytest.raises(SystemExit):
        main([str(run_dir / "missing")])


def test_read_jsonl_series_and_pick_samples(run_dir: Path) -> None:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert len(rows) == STEPS + 2  # the cut line is dropped
    steps, values = series(rows, "eval/accuracy")
    assert steps == [0, STEPS] and values == [0.05, 0.5]
    picked = pick_samples(read_jsonl(run_dir / "samples.jsonl"))
    # steps 5, 20, 40 -> early / middle / late; in each the correct sample (i = 1) wins
    assert [(label, row["step"], row["correct"]) for label, row in picked] == [
        ("early", 5, 1.0),
        ("middle", 20, 1.0),
        ("late", 40, 1.0),
    ]


def test_highlight_escapes_then_marks() -> None:
    assert (
        highlight("<think>Wait <b></think>")
        == '&lt;think&gt;<mark title="wait">Wait</mark> &lt;b&gt;&lt;/think&gt;'
    )
    assert highlight("a\x00b") == "a\ufffdb"  # control characters are not valid HTML


def test_cost_section_from_summary_then_from_metrics(tmp_path: Path) -> None:
    from r1zero.cost import cost_metrics

    # 8 GPUs: rollout 1800 s (4 GPU-h, $8, 4/17.6 = 23%), learner 5400 s (12 GPU-h, $24, 68%), other 720 s
    # (1.6 GPU-h, $3.2, 9%); total 17.6 GPU-h, $35.2
    cost = cost_metrics(
        {"rollout": 1800, "learner": 5400},
        gpu=True,
        devices=8,
        tokens_generated=4e6,
        tokens_trained=3e6,
        wall_s=7920,
    )
    rows = [
        {"step": 1, "reward/mean": 0.5, **{k: v / 2 for k, v in cost.items()}},
        {"step": 2, "reward/mean": 0.6, **cost},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = make_report(tmp_path, tmp_path / "a").read_text()
    assert "<h2>What it cost</h2>" in page
    assert "<tr><td>learner</td><td>12</td><td>$24</td><td>68%</td></tr>" in page
    assert "<tr><td>rollout</td><td>4</td><td>$8</td><td>23%</td></tr>" in page
    assert "<tr><td>other</td><td>1.6</td><td>$3.2</td><td>9%</td></tr>" in page
    assert "<tr><td>total</td><td>17.6</td><td>$35.2</td><td>100%</td></tr>" in page
    assert "<th>GPU-hours</th>" in page and "4,000,000 tokens generated, 3,000,000 trained" in page
    assert "$35.20 is 6.3e-06 of DeepSeek-V3&#x27;s published $5.576M" in page
    # summary.json (the whole run) wins over the metrics rows: a CPU run of 0.5 core-hours at $0.05
    whole = cost_metrics({"rollout": 900.0}, gpu=False, devices=2, tokens_generated=10, tokens_trained=5)
    (tmp_path / "summary.json").write_text(json.dumps({"steps_done": 2, "cost": whole}))
    page = make_report(tmp_path, tmp_path / "b").read_text()
    assert "<tr><td>total</td><td>0.5</td><td>$0.025</td><td>100%</td></tr>" in page
    assert "<th>CPU core-hours</th>" in page


def test_no_cost_figures_is_a_note(run_dir: Path) -> None:
    assert "no cost/* figures in summary.json or metrics.jsonl" in make_report(run_dir).read_text()
