"""The custom-layer descriptors (one per hls4ml custom layer), the head geometry, and a failing g++."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest


def test_every_custom_layer_is_one_descriptor():
    """Registration, the C++ header and the numpy twin agree with each descriptor (nothing keyed elsewhere)."""
    from exitlogic.fixedpoint import stages
    from hls.extension import CPP_SOURCE, CUSTOM_LAYERS, modules

    cpp = CPP_SOURCE.read_text()
    assert set(CUSTOM_LAYERS) == {"LraeeSSAMean", "LraeeLayerNorm", "LraeeGELU", "LraeeExitComparator"}
    for name, d in CUSTOM_LAYERS.items():
        assert d.name == name and modules()[name].__name__ == name
        # the C++ function and config struct exist, and the header says which numpy stage it mirrors
        assert re.search(rf"void {d.cpp_function}\(", cpp) and f"struct {d.config_base} {{" in cpp
        assert d.numpy_twin is getattr(stages, d.twin) and inspect.isfunction(d.numpy_twin)
        assert f"stages.{d.twin}" in cpp
        # every config constant and typedef the descriptor lists is one the C++ reads through CONFIG_T
        body = cpp.split(f"struct {d.config_base} {{", 1)[1].split("};", 1)[0]
        for k in d.cpp_consts + d.cpp_types:
            assert re.search(rf"\b{k}\b", body), (name, k)


def test_descriptor_refuses_an_incomplete_layer():
    from hls.extension import GELU

    ok = dict(reuse_factor=1, n_in=4, consts={"table": [0.0, 1.0]},
              cpp_consts={"n_in": 4, "x_w": 8, "a_w": 10, "r_shift": 3, "sh": 2, "entries": 1},
              cpp_types={"frac_t": "ap_ufixed<2,0>", "phi_t": "ap_ufixed<8,1>"})
    attrs = GELU.attributes(**ok)
    assert attrs["n_in"] == 4 and attrs["consts"]["table"].tolist() == [0.0, 1.0]
    assert GELU.out_size(attrs) == 4
    with pytest.raises(ValueError, match="cpp_consts: missing"):
        GELU.attributes(**{**ok, "cpp_consts": {"n_in": 4}})
    with pytest.raises(ValueError, match="weights"):
        GELU.attributes(**{**ok, "consts": {"table": [0.0], "evil": [1.0]}})
    with pytest.raises(ValueError, match="not an ap type"):
        GELU.attributes(**{**ok, "cpp_types": {"frac_t": "int; system(0)", "phi_t": "ap_ufixed<8,1>"}})
    with pytest.raises(ValueError, match="norm unit"):
        GELU.attributes(**ok, unit={"consts": {}, "types": {}})


def test_head_block_sizes_come_from_the_exit_head_geometry(compiled, hls_world):
    from hls.blocks import head_geometry
    from quant.geometry import ExitHeadGeometry

    unit, L = compiled["unit"], hls_world["layer"]
    hg = head_geometry(unit, L)
    assert isinstance(hg, ExitHeadGeometry)
    assert (hg.width, hg.hidden, hg.embed_dim) == (unit.spec.d, unit.spec.d, unit.spec.e)
    layers = compiled["report"]["blocks"][f"head_L{L}"]["estimate"]["layers"]
    assert (layers["fc1"]["multipliers"] * layers["fc1"]["reuse_factor"]) >= hg.width * hg.hidden
    hm = compiled[f"head_L{L}"]
    shapes = {layer.name: layer.get_output_variable().shape for layer in hm.get_layers()}
    assert shapes["fc1"] == [hg.hidden] and shapes["gelu"] == [hg.hidden] and shapes["fc2"] == [hg.embed_dim]
    mirrors = {n: e.get("mirrors") for n, e in compiled["report"]["blocks"][f"head_L{L}"]["hls4ml_layers"].items()}
    assert mirrors == {"ssa": "exitlogic.fixedpoint.stages.ssa_mean", "ln": "exitlogic.fixedpoint.stages.layernorm",
                       "fc1": None, "gelu": "exitlogic.fixedpoint.stages.gelu", "fc2": None}


def test_failing_gpp_is_one_line_naming_the_tool_and_its_log(run_cli, hls_world, tmp_path, broken_tools):
    broken_tools("g++")
    out = tmp_path / "o"
    rc, _, err = run_cli("hls", "--policy", hls_world["policy_dir"], "--out", out, "--tokens", "derived",
                         "--cache-dir", hls_world["cache"], "--vectors", 4, "--layers", hls_world["layer"],
                         "--blocks", "gate")
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "g++ failed" in err and "Traceback" not in err
    log = Path(err.strip().rsplit("its output: ", 1)[1])
    assert log.is_file() and "deliberately broken" in log.read_text()
    assert not out.exists()  # nothing at --out; the partial folder with the log sits beside it
