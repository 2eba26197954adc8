"""The precision x exit sweep: rows, findings and files from results; one shared FP32 build; bad input."""
from __future__ import annotations

import csv
import json

import pytest

from analysis.precision_sweep import CSV_COLUMNS, finding, sweep_row, write_sweep
from common.errors import InputError


def _ms(x, s=0.0):
    return {"mean": x, "std": s}


def _results(int8, lra, saving, rescue, loss, fp32=0.72, pabee=((1, 0.30, 0.60), (2, 0.12, 0.62))):
    rows = [{"method": "CLS-EE", "top1": _ms(0.70), "flops_saving": _ms(0.10)},
            {"method": "Confidence-only heuristic", "top1": _ms(0.66), "flops_saving": _ms(0.11)}]
    rows += [{"method": f"PABEE (patience {p})", "top1": _ms(t), "flops_saving": _ms(f)} for p, f, t in pabee]
    return {"n_eval": 1000, "seeds": [0, 1], "candidate_layers": [9, 10, 11], "budget": 0.9,
            "fp32_top1": fp32, "int8_top1": int8,
            "lra_ee": {"top1": _ms(lra, 0.01), "flops_saving": _ms(saving, 0.002),
                       "delta_top1_pp": _ms(100 * (lra - int8), 1.0)},
            "baselines": rows, "ablation": [{"row": "iii", "top1": _ms(0.5)}],
            "quadrants": {"rescue": rescue, "loss": loss},
            "quadrants_by_seed": [{"rescue": rescue, "loss": loss}, {"rescue": rescue + 2, "loss": loss}]}


PROFILE = {"blocks": [{"block": L, "ratio": 0.1 * L, "inr": 10.0 / L} for L in range(1, 13)]}


def test_rows_findings_and_files(tmp_path):
    gain = sweep_row("w8a4", _results(0.52, 0.54, 0.102, 248, 228), PROFILE,
                     {"weight_bits": 8, "act_bits": 4, "smoothquant_alpha": None})
    lose = sweep_row("w8a8", _results(0.728, 0.693, 0.101, 41, 111), PROFILE,
                     {"weight_bits": 8, "act_bits": 8, "smoothquant_alpha": None})
    assert gain["methods"]["PABEE"]["patience"] == 2  # the patience whose saving (12 %) is nearest LRA-EE's (10.2 %)
    assert gain["noise"] == {"block": 11, "ratio": pytest.approx(1.1), "inr": pytest.approx(10 / 11)}
    assert gain["rescue"]["mean"] == 249 and gain["loss"]["mean"] == 228
    assert gain["int8_loss_pp"] == pytest.approx(20.0)
    assert "LRA-EE gains 2.00" in finding(gain) and "-20.00 pp against FP32" in finding(gain)
    assert "LRA-EE loses 3.50" in finding(lose) and "+0.80 pp against FP32" in finding(lose)
    files = write_sweep(tmp_path, [lose, gain], {"model": "lraee-tiny", "data": "procedural", "budget": 0.9})
    assert [p.name for p in files] == ["sweep.json", "sweep.csv", "sweep.png"] and all(p.stat().st_size for p in files)
    doc = json.loads((tmp_path / "sweep.json").read_text())
    assert doc["recipes"] == ["w8a8", "w8a4"] and len(doc["findings"]) == 2
    with (tmp_path / "sweep.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert float(rows[1]["lra_ee_delta_pp"]) == pytest.approx(2.0) and rows[1]["act_bits"] == "4"
    assert float(rows[1]["net"]) == pytest.approx(21.0)
    w4 = sweep_row("w4a8", _results(0.70, 0.69, 0.1, 30, 50), PROFILE, {"weight_bits": 4, "act_bits": 8,
                                                                        "smoothquant_alpha": None})
    sq = sweep_row("w8a4+sq", _results(0.53, 0.55, 0.1, 300, 260), PROFILE, {"weight_bits": 8, "act_bits": 4,
                                                                             "smoothquant_alpha": 0.5})
    write_sweep(tmp_path / "mixed", [lose, gain, w4, sq], {"model": "m", "data": "d", "budget": 0.9})
    assert (tmp_path / "mixed" / "sweep.png").stat().st_size > 0  # weight widths as line styles, SQ hollow


@pytest.mark.parametrize("sweep, msg", [
    (["w8a8", "fp32"], "not a static INT8 recipe"),
    (["w8a8", "w8a8"], "listed twice"),
    (["w8a8+foo"], "modifier"),
    (["w8a4+sq1.5"], "outside [0, 1]"),
])
def test_sweep_setting_refuses_bad_recipes(tmp_path, sweep, msg):
    from analysis.pipeline.config import load_config

    cfg = tmp_path / "run.yaml"
    cfg.write_text(json.dumps({"precision": {"sweep": sweep}}))
    with pytest.raises(InputError, match="precision.sweep") as e:
        load_config(cfg)
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_sweep_shares_one_fp32_build(tmp_path, monkeypatch):
    """Two recipes, one FP32 store per split (train teacher, eval) in the cache: built once, then reused."""
    from analysis import features as F
    from analysis import workflows as wf
    from analysis.settings import DataCfg, ExitsCfg, ModelCfg, PrecisionCfg, RuntimeCfg, ThresholdsCfg

    built = []
    real = F._commit  # every store built is committed once

    def counted(job, *a, **kw):
        built.append((job.prepared.tag, job.source.name))
        return real(job, *a, **kw)

    monkeypatch.setattr(F, "_commit", counted)
    s = wf.Session(RuntimeCfg(cache_dir=str(tmp_path / "cache"), workers=0), progress=False, log=lambda m: None)
    data = DataCfg(train_n=160, gating_n=96, eval_n=96, profile_n=32)
    doc = wf.precision_sweep(s, ModelCfg(), PrecisionCfg(calib_n=32), data, ExitsCfg(seeds=1, epochs=1),
                             ThresholdsCfg(grid="0.3:0.9:4"), ["w8a8", "w8a4"], tmp_path / "sweep")
    fp32 = [b for b in built if b[0] == "fp32"]
    assert sorted(n for _, n in fp32) == sorted(["procedural0-train-160", "procedural0-eval-96"]), built
    assert len([b for b in built if b[0] != "fp32"]) == 6  # train, gating, eval per recipe
    assert doc["recipes"] == ["w8a8", "w8a4"]
    assert [r["act_bits"] for r in doc["rows"]] == [8, 4]
    for r in doc["rows"]:
        assert (tmp_path / "sweep" / r["files"]["trace"]).is_file()
        assert r["methods"]["FP32 full depth"]["top1"]["mean"] == doc["rows"][0]["methods"]["FP32 full depth"]["top1"]["mean"]
