"""The demo path end to end on a tiny corpus: ERM, two fine-tunes from it, reports side by side."""

from __future__ import annotations

import json

import pytest

from arw_sv import demo

TINY = (
    "model.preset=tiny",
    "model.channels=[]",
    "data.crop_seconds=1.0",
    "data.speakers_per_batch=4",
    "train.steps=12",
    "train.warmup_steps=2",
    "train.log_every=4",
    "train.checkpoint_every=6",
    "train.threads=1",
    "loss.margin_warmup_start=0",
    "loss.margin_warmup_steps=4",
    "data.n_cohorts=2",
    "data.cohort_oversample_top=1",
    "adversary.n_clusters=2",
    "adversary.cluster_refresh_steps=2",
)


@pytest.mark.slow
def test_demo_finetunes_erm_and_the_fairness_method_from_one_erm_model(tmp_path, monkeypatch):
    out = tmp_path / "demo"
    reports = demo.run_demo(
        out, synth_preset="tiny", overrides=TINY, finetune_steps=6, workers=1, bootstrap=0,
        calibration_speakers_per_cell=30, calibration={"clusters": 2}, progress=False,
    )  # fmt: skip
    assert list(reports) == ["erm", "arw_pw_paironly"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finetune_steps"] == 6
    for name, report in reports.items():
        # each model's numbers are its own report's, and the fine-tune started from the ERM model
        saved = json.loads((out / "eval" / name / "report" / "report.json").read_text())
        assert summary["models"][name]["eer_percent"] == round(100 * saved["overall"]["eer"], 2)
        assert report["overall"]["eer"] == saved["overall"]["eer"]
        history = (out / "finetune" / name / "history.jsonl").read_text().splitlines()
        assert json.loads(history[-1])["step"] == 6
    # the fairness fine-tune played its adversary from its first logged step
    rows = (out / "finetune" / "arw_pw_paironly" / "history.jsonl").read_text().splitlines()
    assert rows and all("weight_ess" in json.loads(r) for r in rows)
    table = (out / "comparison.md").read_text()
    assert "| EER overall |" in table and "arw_pw_paironly" in table
    assert (out / "comparison_groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Calibrated with the recommended back-end on the calibration speakers (none of them
    # trained on or tested), side by side with raw cosine at one threshold.
    from arw_sv.calibration import load_calibrator
    from arw_sv.data.manifest import read_manifest

    cal_speakers = set(read_manifest(out / "manifests" / "cal.csv").speakers)
    assert len(cal_speakers) == 30 * 2 * 2  # tiny: 2 nationalities x 2 genders
    assert not cal_speakers & set(read_manifest(out / "manifests" / "train.csv").speakers)
    assert not cal_speakers & set(read_manifest(out / "manifests" / "test.csv").speakers)
    for name, report in reports.items():
        calibrator = load_calibrator(out / "eval" / name / "calibration.json")
        assert calibrator.label == "asnorm+fsn" and set(calibrator.speakers) == cal_speakers
        assert report["calibrated"]["method"] == "asnorm+fsn"
        assert "at_threshold" in summary["models"][name]
    assert "At one threshold (overall FMR 1%)" in table and "max/min nationality" in table
    assert (out / "comparison_threshold.png").read_bytes()[:4] == b"\x89PNG"

    # a second call trains and embeds nothing: the stages are complete
    def refuse(*args, **kwargs):
        raise AssertionError("a complete stage ran again")

    monkeypatch.setattr("arw_sv.inference.embed_utterances", refuse)
    again = demo.run_demo(
        out, synth_preset="tiny", overrides=TINY, finetune_steps=6, workers=1, bootstrap=0,
        calibration_speakers_per_cell=30, calibration={"clusters": 2}, progress=False,
    )  # fmt: skip
    assert (
        again["arw_pw_paironly"]["overall"]["eer"] == reports["arw_pw_paironly"]["overall"]["eer"]
    )


def test_method_names_of_shipped_configs():
    assert demo.method_name("demo_cohort_oversample") == "cohort_oversample"
    assert demo.method_name("demo") == "erm"


def test_the_cli_default_is_the_demo_recommendation():
    from arw_sv.cli import demo as cli_demo

    assert cli_demo.RECOMMENDED == demo.RECOMMENDED
    assert demo.config_path(demo.RECOMMENDED).is_file()


def test_the_comparison_plot_draws_the_bootstrap_intervals_as_error_bars(monkeypatch):
    from arw_sv import demo

    def report(eer, low, high):
        group = {"eer": eer, "ci": {"eer": {"low": low, "high": high}}}
        return {
            "overall": group,
            "groups": {
                "gender": {"groups": {"f": group}},
                "nationality": {"groups": {"UK": group}},
            },
        }

    summary = {
        "models": {"erm": demo.summarise(report(0.1, 0.08, 0.13))},
        "finetune_steps": 10,
    }
    assert summary["models"]["erm"]["eer_ci_percent"]["f"] == [8.0, 13.0]
    drawn = {}
    from matplotlib.axes import Axes

    real = Axes.bar

    def spy(self, x, height, *args, **kwargs):
        drawn["yerr"] = kwargs.get("yerr")
        return real(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    png = demo.comparison_plot(summary)
    assert png.startswith(b"\x89PNG")
    low, high = drawn["yerr"]
    assert low == pytest.approx([2.0] * 3) and high == pytest.approx([3.0] * 3)


def test_the_threshold_table_and_plot_show_raw_and_calibrated_rates_with_intervals(monkeypatch):
    """Per-group FMR/FNMR at the FMR-1% threshold, raw -> calibrated, from the reports."""

    def report(fmr_f, fmr_m, ci):
        def group(fmr):
            entry = {"fmr": fmr, "fnmr": 0.2}
            if ci:
                entry["ci"] = {"fmr": {"low": fmr - 0.001, "high": fmr + 0.002},
                               "fnmr": {"low": 0.15, "high": 0.25}}  # fmt: skip
            return {"eer": 0.1, "at_threshold": {demo.THRESHOLD: entry}}

        section = {
            "groups": {"f": group(fmr_f), "m": group(fmr_m)},
            "disparity": {"at_threshold": {demo.THRESHOLD: {
                "fmr_ratio": max(fmr_f, fmr_m) / min(fmr_f, fmr_m), "fnmr_ratio": 1.0},
                "global_fmr_0.001": {"fmr_ratio": 3 * fmr_f / fmr_m, "fnmr_ratio": 1.0},
                "global_eer": {"fmr_ratio": None, "fnmr_ratio": 1.0}}},
        }  # fmt: skip
        return {"overall": {"eer": 0.1}, "groups": {"gender": section, "nationality": section}}

    raw = report(0.02, 0.005, ci=True)
    raw["calibrated"] = {"method": "asnorm+fsn", "report": report(0.011, 0.009, ci=True)}
    summary = {"models": {"erm": demo.summarise(raw)}, "finetune_steps": 1, "seconds": 1}
    rates = summary["models"]["erm"]["at_threshold"]
    assert rates["raw"]["f"]["fmr"] == 2.0 and rates["calibrated"]["m"]["fmr"] == 0.9
    assert rates["raw"]["f"]["fmr_ci"] == [1.9, 2.2]
    assert rates["raw"]["gender ratio"]["fmr"] == pytest.approx(4.0)
    table = "\n".join(demo.threshold_table(summary))
    assert "| f | 2.00 -> 1.10 | 20.00 -> 20.00 |" in table
    assert "| max/min gender | 4.00 -> 1.22 |" in table
    # The FMR ratio at three thresholds (issue 28): 0.1%, 1%, EER (no ratio there: n/a).
    assert "| erm | gender | 12.00 -> 3.67 | 4.00 -> 1.22 | n/a |" in table
    drawn = []
    from matplotlib.axes import Axes

    real = Axes.bar

    def spy(self, x, height, *args, **kwargs):
        drawn.append(kwargs.get("yerr"))
        return real(self, x, height, *args, **kwargs)

    monkeypatch.setattr(Axes, "bar", spy)
    assert demo.threshold_plot(summary).startswith(b"\x89PNG")
    low, high = drawn[0]  # FMR, raw: 2.0 with [1.9, 2.2]
    assert low[0] == pytest.approx(0.1) and high[0] == pytest.approx(0.2)
