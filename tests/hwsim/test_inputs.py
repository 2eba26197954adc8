"""Bad input: one-line errors naming file, field and allowed values; non-zero exit; nothing written."""
import json

import pytest

from common.errors import InputError
from hwsim.config import load_arch
from hwsim.trace import read_trace, write_trace

from hwsim_helpers import CANDS, TINY, run_cli


def _meta(path, **upd):
    d = {"schema_version": 1, "depth": 12, "candidate_layers": list(CANDS), "num_classes": 25,
         "geometry": TINY.to_dict()}
    d.update(upd)
    path.with_name(path.name[:-4] + ".meta.json").write_text(json.dumps(d))


def _csv(tmp_path, text, **meta):
    p = tmp_path / "trace.csv"
    p.write_text(text)
    _meta(p, **meta)
    return p


@pytest.mark.parametrize("text,needle", [
    ("sample_id,layer\n0,4\n", "exit_layer: missing column"),
    ("sample_id,exit_layer\n0,13\n", "exit_layer: 13 on line 2 is beyond depth"),
    ("sample_id,exit_layer\n0,5\n", "is not a candidate layer"),
    ("sample_id,exit_layer\n", "empty trace"),
    ("", "empty trace"),
    ("sample_id,exit_layer,correct\n0,4,2\n", "correct: values must be 0 or 1"),
    ("sample_id,exit_layer,candidate_layers_evaluated\n0,8,4;6\n", "exits at 8 without evaluating it"),
    ("sample_id,exit_layer,candidate_layers_evaluated\n0,6,4;8\n", "candidate_layers_evaluated: 8"),
    ("sample_id,exit_layer\n0,4\n0,6\n", "duplicate ids"),
])
def test_bad_traces(tmp_path, text, needle):
    p = _csv(tmp_path, text)
    with pytest.raises(InputError) as e:
        read_trace(p)
    msg = str(e.value)
    assert needle in msg and str(p) in msg and "\n" not in msg and "allowed" in msg


def test_bad_meta(tmp_path):
    p = _csv(tmp_path, "sample_id,exit_layer\n0,4\n", candidate_layers=[4, 12])
    with pytest.raises(InputError, match=r"candidate_layers: \[12\]"):
        read_trace(p)
    (tmp_path / "trace.meta.json").unlink()
    with pytest.raises(InputError, match="trace.meta.json: file not found"):
        read_trace(p)


def test_missing_trace_csv_is_named_before_its_sidecar(tmp_path):
    with pytest.raises(InputError, match=r"nope\.csv: file not found"):
        read_trace(tmp_path / "nope.csv")


def test_trace_roundtrip_and_evaluated_default(tmp_path):
    p = tmp_path / "t.csv"
    write_trace(p, [4, 12, 8], CANDS, 12, 25, correct=[1, 0, 1], geometry=TINY)
    t = read_trace(p)
    assert t.exit_layer.tolist() == [4, 12, 8] and t.accuracy == pytest.approx(2 / 3)
    assert t.evaluated.tolist() == [[True, False, False, False], [True] * 4, [True, True, True, False]]
    assert t.geometry == TINY


@pytest.mark.parametrize("yaml_text,needle", [
    ("array: {dataflow: xs}\n", "array.dataflow"),
    ("array: {rows: 0}\n", "array.rows: Input should be greater than 0"),
    ("sram: {ifmap_kb: -4}\n", "sram.ifmap_kb"),
    ("batch: {policy: dynamic}\n", "allowed: static, regroup, stream"),
    ("clock: 5\n", "clock: unknown field"),
    ("array: [1, 2\n", "not valid YAML"),
])
def test_bad_arch(tmp_path, yaml_text, needle):
    p = tmp_path / "arch.yaml"
    p.write_text(yaml_text)
    with pytest.raises(InputError) as e:
        load_arch(p)
    assert needle in str(e.value) and str(p) in str(e.value) and "\n" not in str(e.value)


def test_unknown_dataflow_lists_allowed(tmp_path):
    p = tmp_path / "arch.yaml"
    p.write_text("array: {dataflow: xs}\n")
    with pytest.raises(InputError, match="allowed: os, ws, is"):
        load_arch(p)


def test_cli_error_writes_nothing(tmp_path):
    p = _csv(tmp_path, "sample_id,exit_layer\n0,13\n")
    out = tmp_path / "out"
    rc, _, err = run_cli(["sim", "--trace", str(p), "--out", str(out)])
    assert rc == 2 and err.startswith("lraee sim: error:") and err.count("\n") == 1
    assert not out.exists()
    bad = tmp_path / "arch.yaml"
    bad.write_text("array: {dataflow: xs}\n")
    p = _csv(tmp_path, "sample_id,exit_layer\n0,12\n")
    rc, _, err = run_cli(["sim", "--arch", str(bad), "--trace", str(p), "--out", str(out)])
    assert rc == 2 and "array.dataflow" in err and not out.exists()


def test_energy_table_yaml_and_accelergy(tmp_path):
    from hwsim.config import EnergyCfg
    from hwsim.energy import HOROWITZ45, table_for
    t = tmp_path / "e.yaml"
    t.write_text("dram_64b: 1300\nsram_64b: {8: 5, 1024: 50}\n")
    tab = table_for(EnergyCfg(table=str(t)))
    assert tab.dram_64b == 1300 and tab.int8_mult == HOROWITZ45.int8_mult
    assert tab.sram_pj_per_64b(8) == pytest.approx(5) and tab.sram_pj_per_64b(1024) == pytest.approx(50)
    assert HOROWITZ45.sram_pj_per_64b(32) == pytest.approx(20)
    t.write_text("dram: 3\n")
    with pytest.raises(InputError, match="dram: unknown field"):
        table_for(EnergyCfg(table=str(t)))
    ert = tmp_path / "ERT_summary.yaml"
    ert.write_text("ERT_summary:\n  version: '0.4'\n  table_summary:\n  - name: system.PE.mac\n    actions:\n"
                   "    - {name: mac_random, energy: 0.5}\n  - name: system.DRAM\n    actions:\n"
                   "    - {name: read, energy: 512.0}\n")
    tab = table_for(EnergyCfg(accelergy_ert=str(ert), accelergy_map={"mac": "system.PE.mac:mac_random",
                                                                      "dram_64b": "system.DRAM:read"}))
    assert tab.mac_pj() == 0.5 and tab.dram_64b == 512.0
    with pytest.raises(InputError, match="not in the ERT summary"):
        table_for(EnergyCfg(accelergy_ert=str(ert), accelergy_map={"mac": "nope:x"}))


def test_hls_report_overrides_exit_unit(tmp_path):
    from hwsim.costs import exit_unit_timing
    from hwsim_helpers import arch
    r = tmp_path / "hls_report.json"
    r.write_text(json.dumps({"latency_cycles": 17, "interval_cycles": 2}))
    assert exit_unit_timing(arch(exit_unit__hls_report=str(r))) == (17, 2)
    assert exit_unit_timing(arch(exit_unit__hls_report=str(tmp_path / "absent.json"))) == (64, 4)
