"""The demo runs end to end on a tiny budget and writes non-empty figures."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from memagent.continual.demo import add_arguments, main, run_demo


def test_demo_tiny_budget_writes_figures(tmp_path):
    lines: list[str] = []
    result = run_demo(
        budget="tiny",
        seed=0,
        out_dir=tmp_path,
        progress=False,
        report=lines.append,
        baselines=(("dnc", "none"), ("mlp", "prioritized")),
    )
    assert len(result.figures) == 2
    for path in result.figures:
        assert path.exists() and path.stat().st_size > 10_000
        img = mpimg.imread(path)
        assert img.ndim == 3 and img.std() > 0.01  # not blank
    assert result.main.errors.shape == (4, 4)
    assert set(result.baselines) == {"dnc/none", "mlp/prioritized"}
    assert result.memory.shape == (4, 4) and np.abs(result.memory).sum() > 0
    text = "\n".join(lines)
    assert "after task 4" in text and "after 5 step(s)" in text
    assert "| dnc/prioritized |" in text


def test_demo_cli_and_bad_budget(tmp_path, capsys):
    import argparse

    args = add_arguments(argparse.ArgumentParser()).parse_args(["--budget", "tiny"])
    assert args.budget == "tiny" and args.seed == 0
    main(["--budget", "tiny", "--out-dir", str(tmp_path), "--no-progress", "--persist-memory"])
    assert "after task 4" in capsys.readouterr().out
    assert (tmp_path / "continual_matrix_baselines.png").exists()
    with pytest.raises(ValueError, match="budget"):
        run_demo(budget="huge", out_dir=tmp_path)
