"""Usage errors (exit 2): an out-of-range or malformed value of a numeric or enumerated option.

Every case runs ``petctfm.cli.main.main`` in this process on inputs that do not exist (validation comes before
anything is read, loaded or written) and asserts: exit 2, exactly one ``error:`` line on stderr naming the flag
and the value and what is allowed, no traceback, and nothing written under the test's folder. The API raises
:class:`petctfm.core.errors.UsageError` naming the Python argument (``workers=0: must be >= 1``); the CLI words
it as the flag (``--workers 0: must be >= 1``). docs/reliability.md lists the cases.
"""

from __future__ import annotations

import os

import pytest

from petctfm.cli.main import main

IN, OUT, MODEL, DATA = "IN", "OUT", "MODEL", "DATA"

HARMONIZE = ["harmonize", "--in", IN, "--out", OUT]
PREDICT = ["predict", "--model", MODEL, "--pet", "P.nii.gz", "--ct", "C.nii.gz", "--out", OUT]
EVALUATE = ["evaluate", "--pred", "PRED", "--gt", "GT", "--out", OUT]
PROBE = ["probe", "--data", DATA, "--encoder", MODEL, "--out", OUT]
STAGE = ["stage", "--data", DATA, "--encoder", MODEL, "--out", OUT]
LABEL_EFF = ["experiment", "label-efficiency", "--data", DATA, "--pretrained", MODEL, "--out", OUT]
FRATMAE = ["experiment", "fratmae-ablation", "--data", DATA, "--out", OUT]
INTERACTIVE = ["experiment", "interactive", "--data", DATA, "--model", MODEL, "--out", OUT]
SERVE = ["serve", "--model", MODEL, "--data", DATA, "--out", OUT]
SEGMENT = ["segment", "--model", MODEL, "--pet", "P.nii.gz", "--prompts", "p.json", "--out", OUT]
SYNTH = ["synth", "--out", OUT, "--cases", "1", "--seed", "0", "--size", "tiny"]
VIEW = ["view", "P.nii.gz", "--out", "out.png"]
DEMO = ["demo", "--out", OUT, "--preset", "tiny"]

# (id, argv, flag the error line names, text of the value it names)
CASES = [
    # harmonize
    ("harmonize-workers-0", HARMONIZE + ["--workers", "0"], "--workers", "0"),
    ("harmonize-workers-neg", HARMONIZE + ["--workers", "-1"], "--workers", "-1"),
    ("harmonize-shard-abc", HARMONIZE + ["--shard", "abc"], "--shard", "abc"),
    ("harmonize-shard-3of2", HARMONIZE + ["--shard", "3/2"], "--shard", "3/2"),
    ("harmonize-shard-2of2", HARMONIZE + ["--shard", "2/2"], "--shard", "2/2"),
    ("harmonize-shard-0of0", HARMONIZE + ["--shard", "0/0"], "--shard", "0/0"),
    ("harmonize-spacing-0", HARMONIZE + ["--spacing", "0", "2", "3"], "--spacing", "0.0, 2.0, 3.0"),
    ("harmonize-spacing-neg", HARMONIZE + ["--spacing", "-1", "2", "3"], "--spacing", "-1.0, 2.0, 3.0"),
    ("harmonize-spacing-nan", HARMONIZE + ["--spacing", "2", "nan", "3"], "--spacing", "nan"),
    ("harmonize-spacing-50", HARMONIZE + ["--spacing", "2", "2", "50"], "--spacing", "50.0"),
    ("harmonize-ct-window-reversed", HARMONIZE + ["--ct-window", "100", "-100"], "--ct-window", "100.0, -100.0"),
    ("harmonize-ct-window-nan", HARMONIZE + ["--ct-window", "nan", "100"], "--ct-window", "nan"),
    ("harmonize-margin-neg", HARMONIZE + ["--margin", "-1"], "--margin", "-1"),
    ("harmonize-margin-inf", HARMONIZE + ["--margin", "inf"], "--margin", "inf"),
    ("harmonize-format", HARMONIZE + ["--format", "png"], "--format", "png"),
    ("harmonize-no-in", ["harmonize", "--out", OUT], "--in", ""),
    ("harmonize-finalize-with-in", ["harmonize", "--finalize", DATA, "--in", IN], "--finalize", ""),
    # predict
    ("predict-overlap-1", PREDICT + ["--overlap", "1"], "--overlap", "1"),
    ("predict-overlap-neg", PREDICT + ["--overlap", "-0.1"], "--overlap", "-0.1"),
    ("predict-overlap-nan", PREDICT + ["--overlap", "nan"], "--overlap", "nan"),
    ("predict-sw-batch-0", PREDICT + ["--sw-batch", "0"], "--sw-batch", "0"),
    ("predict-sw-batch-neg", PREDICT + ["--sw-batch", "-2"], "--sw-batch", "-2"),
    ("predict-tta-3", PREDICT + ["--tta", "3"], "--tta", "3"),
    ("predict-threshold-0", PREDICT + ["--threshold", "0"], "--threshold", "0"),
    ("predict-threshold-1", PREDICT + ["--threshold", "1"], "--threshold", "1"),
    ("predict-threshold-nan", PREDICT + ["--threshold", "nan"], "--threshold", "nan"),
    ("predict-format", PREDICT + ["--format", "png"], "--format", "png"),
    ("predict-two-inputs", PREDICT + ["--in", IN], "--in", ""),
    ("predict-no-input", ["predict", "--model", MODEL, "--out", OUT], "--pet", ""),
    # evaluate
    ("evaluate-bootstrap-neg", EVALUATE + ["--bootstrap", "-1"], "--bootstrap", "-1"),
    ("evaluate-detection-iou-1", EVALUATE + ["--detection-iou", "1"], "--detection-iou", "1"),
    ("evaluate-detection-iou-neg", EVALUATE + ["--detection-iou", "-0.5"], "--detection-iou", "-0.5"),
    ("evaluate-detection-iou-nan", EVALUATE + ["--detection-iou", "nan"], "--detection-iou", "nan"),
    ("evaluate-seed-neg", EVALUATE + ["--seed", "-1"], "--seed", "-1"),
    ("evaluate-connectivity-8", EVALUATE + ["--connectivity", "8"], "--connectivity", "8"),
    # probe
    ("probe-steps-0", PROBE + ["--steps", "0"], "--steps", "0"),
    ("probe-batch-size-0", PROBE + ["--batch-size", "0"], "--batch-size", "0"),
    ("probe-voxels-per-patch-0", PROBE + ["--voxels-per-patch", "0"], "--voxels-per-patch", "0"),
    ("probe-l2-neg", PROBE + ["--l2", "-1"], "--l2", "-1"),
    ("probe-l2-nan", PROBE + ["--l2", "nan"], "--l2", "nan"),
    ("probe-fg-prob-2", PROBE + ["--fg-prob", "2"], "--fg-prob", "2"),
    ("probe-fg-prob-neg", PROBE + ["--fg-prob", "-0.1"], "--fg-prob", "-0.1"),
    ("probe-kshot-0", PROBE + ["--kshot", "0"], "--kshot", "0"),
    ("probe-fraction-0", PROBE + ["--fraction", "0"], "--fraction", "0"),
    ("probe-fraction-1.5", PROBE + ["--fraction", "1.5"], "--fraction", "1.5"),
    ("probe-patch-0", PROBE + ["--patch", "0"], "--patch", "0"),
    ("probe-bootstrap-neg", PROBE + ["--bootstrap", "-1"], "--bootstrap", "-1"),
    ("probe-points", PROBE + ["--points", "enc0,xyz"], "--points", "xyz"),
    # stage
    ("stage-hidden-0", STAGE + ["--hidden", "0"], "--hidden", "0"),
    ("stage-max-epochs-0", STAGE + ["--max-epochs", "0"], "--max-epochs", "0"),
    ("stage-patch-0", STAGE + ["--patch", "0"], "--patch", "0"),
    ("stage-bootstrap-neg", STAGE + ["--bootstrap", "-1"], "--bootstrap", "-1"),
    ("stage-scales-3", STAGE + ["--scales", "3"], "--scales", "3"),
    # experiment label-efficiency
    ("le-seeds-abc", LABEL_EFF + ["--seeds", "abc"], "--seeds", "abc"),
    ("le-max-steps-neg", LABEL_EFF + ["--max-steps", "-5"], "--max-steps", "-5"),
    ("le-max-steps-0", LABEL_EFF + ["--max-steps", "0"], "--max-steps", "0"),
    ("le-max-time-neg", LABEL_EFF + ["--max-time", "-1"], "--max-time", "-1"),
    ("le-probe-steps-0", LABEL_EFF + ["--probe-steps", "0"], "--probe-steps", "0"),
    ("le-probe-kshot-neg", LABEL_EFF + ["--probe-kshot", "-1"], "--probe-kshot", "-1"),
    ("le-fractions-abc", LABEL_EFF + ["--fractions", "10,abc"], "--fractions", "abc"),
    ("le-fractions-0", LABEL_EFF + ["--fractions", "0,10"], "--fractions", "0"),
    ("le-fractions-150", LABEL_EFF + ["--fractions", "150"], "--fractions", "150"),
    ("le-arms", LABEL_EFF + ["--arms", "pretrained,foo"], "--arms", "foo"),
    ("le-runs", LABEL_EFF + ["--runs", "foo:10"], "--runs", "foo:10"),
    ("le-preset", LABEL_EFF + ["--preset", "huge"], "--preset", "huge"),
    # experiment fratmae-ablation
    ("frat-seeds-abc", FRATMAE + ["--seeds", "abc"], "--seeds", "abc"),
    ("frat-max-steps-neg", FRATMAE + ["--max-steps", "-5"], "--max-steps", "-5"),
    ("frat-pretrain-steps-0", FRATMAE + ["--pretrain-steps", "0"], "--pretrain-steps", "0"),
    ("frat-fraction-0", FRATMAE + ["--fraction", "0"], "--fraction", "0"),
    ("frat-fraction-150", FRATMAE + ["--fraction", "150"], "--fraction", "150"),
    ("frat-more-fractions-abc", FRATMAE + ["--more-fractions", "abc"], "--more-fractions", "abc"),
    ("frat-stage-epochs-0", FRATMAE + ["--stage-epochs", "0"], "--stage-epochs", "0"),
    ("frat-bootstrap-neg", FRATMAE + ["--bootstrap", "-1"], "--bootstrap", "-1"),
    # experiment interactive
    ("inter-max-cases-0", INTERACTIVE + ["--max-cases", "0"], "--max-cases", "0"),
    ("inter-max-clicks-0", INTERACTIVE + ["--max-clicks", "0"], "--max-clicks", "0"),
    ("inter-max-targets-0", INTERACTIVE + ["--max-targets", "0"], "--max-targets", "0"),
    ("inter-iso-box-0", INTERACTIVE + ["--iso-box-mm", "0"], "--iso-box-mm", "0"),
    ("inter-figures-neg", INTERACTIVE + ["--figures", "-1"], "--figures", "-1"),
    ("inter-max-zoom-0.5", INTERACTIVE + ["--max-zoom", "0.5"], "--max-zoom", "0.5"),
    ("inter-protocols", INTERACTIVE + ["--protocols", "autopet,foo"], "--protocols", "foo"),
    # serve
    ("serve-port-99999", SERVE + ["--port", "99999"], "--port", "99999"),
    ("serve-port-0", SERVE + ["--port", "0"], "--port", "0"),
    ("serve-port-neg", SERVE + ["--port", "-1"], "--port", "-1"),
    ("serve-no-cases", ["serve", "--model", MODEL, "--out", OUT], "--data", ""),
    # segment
    ("segment-max-zoom-0", SEGMENT + ["--max-zoom", "0"], "--max-zoom", "0"),
    ("segment-max-zoom-nan", SEGMENT + ["--max-zoom", "nan"], "--max-zoom", "nan"),
    ("segment-components", SEGMENT + ["--components", "some"], "--components", "some"),
    # synth
    ("synth-cases-0", ["synth", "--out", OUT, "--cases", "0", "--seed", "0"], "--cases", "0"),
    ("synth-cases-neg", ["synth", "--out", OUT, "--cases", "-3", "--seed", "0"], "--cases", "-3"),
    ("synth-workers-0", SYNTH + ["--workers", "0"], "--workers", "0"),
    ("synth-seed-neg", ["synth", "--out", OUT, "--cases", "1", "--seed", "-1"], "--seed", "-1"),
    ("synth-size", ["synth", "--out", OUT, "--cases", "1", "--seed", "0", "--size", "huge"], "--size", "huge"),
    ("synth-formats", SYNTH + ["--formats", "autopet,png"], "--formats", "png"),
    ("synth-sites", SYNTH + ["--sites", "atlantis"], "--sites", "atlantis"),
    ("synth-tracers", SYNTH + ["--tracers", "fdg,xyz"], "--tracers", "xyz"),
    # view
    ("view-suv-max-0", VIEW + ["--suv-max", "0"], "--suv-max", "0"),
    ("view-dpi-5", VIEW + ["--dpi", "5"], "--dpi", "5"),
    # demo
    ("demo-cases-0", DEMO + ["--cases", "0"], "--cases", "0"),
    ("demo-workers-0", DEMO + ["--workers", "0"], "--workers", "0"),
    ("demo-preset", ["demo", "--out", OUT, "--preset", "huge"], "--preset", "huge"),
]

ALLOWED_WORDS = ("must", "choose", "expected", "invalid choice", "give ", "takes no", "one of", "required")


def _tree(root) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, ds, fs in os.walk(root) for f in fs + ds)


@pytest.mark.parametrize("argv,flag,value", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_usage_error_exits_2_with_one_line(argv, flag, value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's own errors (a choice not offered) exit 2 before the command runs
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    line = lines[0]
    assert flag in line, line
    assert value in line, line
    assert any(w in line for w in ALLOWED_WORDS), line
    assert _tree(tmp_path) == [], f"written: {_tree(tmp_path)}"


def test_the_count_in_the_docs():
    """docs/reliability.md states how many cases this battery has."""
    from pathlib import Path

    text = (Path(__file__).parents[2] / "docs" / "reliability.md").read_text()
    assert f"{len(CASES)} cases" in text
