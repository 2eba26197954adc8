"""Our COMPUTE_REPORT.csv against the scalesim package (v2.0.2) on small GEMMs and convs."""
import contextlib
import io

import pytest

from hwsim.scalesim_io import compute_report_rows, read_cfg, read_topology

from hwsim_helpers import run_cli

CFG = """[general]
run_name = t

[architecture_presets]
ArrayHeight:    {r}
ArrayWidth:     {c}
IfmapSramSzkB:    64
FilterSramSzkB:   64
OfmapSramSzkB:    64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : {df}
MemoryBanks: 1

[run_presets]
InterfaceBandwidth: CALC
"""
GEMM = "Layer, M, N, K,\na, 20, 12, 9,\nb, 8, 8, 8,\nc, 5, 17, 30,\nd, 1, 25, 16,\n"
CONV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
        "conv1, 9, 9, 3, 3, 2, 6, 2,\nconv2, 6, 5, 2, 2, 3, 4, 1,\nDPconv, 5, 5, 3, 3, 2, 1, 1,\n")


def _scalesim(tmp_path, cfg_path, topo_path, gemm):
    scale_sim = pytest.importorskip("scalesim.scale_sim")
    out = tmp_path / "ss"
    with contextlib.redirect_stdout(io.StringIO()):
        s = scale_sim.scalesim(save_disk_space=True, verbose=False, config=str(cfg_path), topology=str(topo_path),
                               input_type_gemm=gemm)
        s.run_scale(top_path=str(out))
    return (out / "t" / "COMPUTE_REPORT.csv").read_text()


@pytest.mark.parametrize("df", ["os", "ws", "is"])
@pytest.mark.parametrize("topo,gemm", [(GEMM, True), (CONV, False)])
def test_compute_report_identical_to_scalesim(tmp_path, df, topo, gemm):
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=8, c=4, df=df))
    tp = tmp_path / "topo.csv"
    tp.write_text(topo)
    theirs = _scalesim(tmp_path, cfg, tp, gemm)
    rc, out, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 0, err
    assert (tmp_path / "o" / "COMPUTE_REPORT.csv").read_text() == theirs


def test_topology_and_cfg_errors(tmp_path):
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=8, c=8, df="xs"))
    tp = tmp_path / "t.csv"
    tp.write_text(GEMM)
    rc, _, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 2 and "architecture_presets.Dataflow" in err and "allowed: os, ws, is" in err
    assert err.count("\n") == 1 and not (tmp_path / "o").exists()
    cfg.write_text(CFG.format(r=0, c=8, df="os"))
    rc, _, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 2 and "ArrayHeight" in err
    cfg.write_text(CFG.format(r=8, c=8, df="os"))
    tp.write_text("Layer, M, N, K,\na, 0, 3, 3,\n")
    rc, _, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 2 and "size <= 0" in err


def test_conv_mapping():
    import tempfile, pathlib
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d) / "t.csv"
        p.write_text(CONV)
        layers = read_topology(p)
    assert [(x.m, x.k, x.n) for x in layers[:2]] == [(16, 18, 6), (20, 12, 4)]
    assert len(layers) == 4 and layers[2].name == "DPconvChannel_0"


def test_vit_b32_topology_roundtrip(tmp_path):
    rc, _, err = run_cli(["sim", "--geometry", str(_geom(tmp_path)), "--write-topology", str(tmp_path / "vit.csv")])
    assert rc == 0, err
    layers = read_topology(tmp_path / "vit.csv")
    assert layers[0].name == "patch_embed" and (layers[0].m, layers[0].k, layers[0].n) == (49, 3072, 768)
    assert sum(1 for x in layers if x.name.startswith("qk_h")) == 12
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=32, c=32, df="ws"))
    rows = compute_report_rows(layers, read_cfg(cfg))
    assert len(rows) == len(layers) and all(r[2] == 0 for r in rows)


def _geom(tmp_path):
    from hwsim_helpers import VIT_B_32
    p = tmp_path / "g.json"
    p.write_text(VIT_B_32.to_json())
    return p
