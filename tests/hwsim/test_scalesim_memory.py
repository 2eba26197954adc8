"""``memory: scalesim`` against the scalesim package (2.0.2), USER bandwidth, small GEMMs.

Inside the steady regime (every operand within its buffer's initial active half, outputs
within the write buffer's drain half) and outside it (the trace replay), the three reports
are identical to SCALE-Sim's: COMPUTE_REPORT.csv (total and stall cycles),
BANDWIDTH_REPORT.csv and DETAILED_ACCESS_REPORT.csv (DRAM read/write counts, SRAM counts,
start/stop cycles)."""
import contextlib
import io

import pytest

from hwsim_helpers import run_cli

CFG = """[general]
run_name = t

[architecture_presets]
ArrayHeight:    {r}
ArrayWidth:     {c}
IfmapSramSzkB:    {kb}
FilterSramSzkB:   {kb}
OfmapSramSzkB:    {kb}
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : {bw}
Dataflow : {df}
MemoryBanks: 1

[run_presets]
InterfaceBandwidth: USER
"""
GEMM = "Layer, M, N, K,\na, 20, 12, 9,\nb, 8, 8, 8,\nc, 5, 17, 30,\nd, 1, 25, 16,\ne, 64, 40, 50,\nf, 33, 7, 21,\n"
REPORTS = ("COMPUTE_REPORT.csv", "BANDWIDTH_REPORT.csv", "DETAILED_ACCESS_REPORT.csv")


def _scalesim(tmp_path, cfg_path, topo_path):
    scale_sim = pytest.importorskip("scalesim.scale_sim")
    out = tmp_path / "ss"
    with contextlib.redirect_stdout(io.StringIO()):
        s = scale_sim.scalesim(save_disk_space=True, verbose=False, config=str(cfg_path), topology=str(topo_path),
                               input_type_gemm=True)
        s.run_scale(top_path=str(out))
    return {r: (out / "t" / r).read_text() for r in REPORTS}


@pytest.mark.parametrize("df,r,c,bw,kb", [("ws", 8, 4, 10, 64), ("is", 8, 4, 10, 64), ("os", 8, 4, 10, 64),
                                          ("ws", 4, 8, 3, 128), ("is", 6, 5, 7, 64), ("os", 5, 6, 4, 64)])
def test_reports_identical_to_scalesim(tmp_path, df, r, c, bw, kb):
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=r, c=c, df=df, kb=kb, bw=bw))
    tp = tmp_path / "topo.csv"
    tp.write_text(GEMM)
    theirs = _scalesim(tmp_path, cfg, tp)
    rc, out, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 0, err
    for rep in REPORTS:
        assert (tmp_path / "o" / rep).read_text() == theirs[rep], rep


# operands that do not fit half a buffer: refetches through the prefetch half, write-buffer
# drains and stalls during compute, tiles with fewer rows than the array (K < R for ws)
OVER = "Layer, M, N, K,\na, 64, 40, 50,\nb, 39, 47, 3,\nc, 70, 61, 30,\nd, 90, 21, 45,\n"


@pytest.mark.parametrize("df,r,c,kb,bw", [("ws", 8, 4, 1, 10), ("is", 6, 5, 1, 3), ("os", 5, 6, 1, 7),
                                          *(pytest.param(*x, marks=pytest.mark.slow) for x in (
                                              ("ws", 8, 8, 2, 1), ("is", 4, 8, 2, 16), ("os", 3, 7, 2, 2)))])
def test_reports_identical_outside_the_steady_regime(tmp_path, df, r, c, kb, bw):
    """1-2 KiB buffers: SCALE-Sim refetches and stalls; the trace replay gives its three reports
    byte for byte (stall cycles, DRAM reads/writes and their cycles, SRAM windows)."""
    from hwsim.scalesim_io import read_cfg, read_topology, scalesim_memory_for
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=r, c=c, df=df, kb=kb, bw=bw))
    tp = tmp_path / "topo.csv"
    tp.write_text(OVER)
    mem = scalesim_memory_for(read_topology(tp), read_cfg(cfg))
    assert mem.exact.all() and mem.replayed.any() and (mem.stall_cycles != 0).any()
    theirs = _scalesim(tmp_path, cfg, tp)
    rc, out, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 0, err
    assert "estimated" not in out
    for rep in REPORTS:
        assert (tmp_path / "o" / rep).read_text() == theirs[rep], rep


CONV = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,\n"
        "pw, 9, 9, 1, 1, 6, 10, 1,\nst, 24, 24, 2, 2, 4, 7, 2,\nov, 10, 10, 3, 3, 4, 8, 1,\n")


def test_conv_layers_with_overlapping_windows_are_flagged(tmp_path):
    """Conv layers whose windows do not overlap have distinct addresses: replayed, identical to
    SCALE-Sim; overlapping windows repeat ifmap addresses (im2col): estimated and said so."""
    scale_sim = pytest.importorskip("scalesim.scale_sim")
    from hwsim.scalesim_io import read_cfg, read_topology, scalesim_memory_for
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=8, c=4, df="ws", kb=1, bw=4))
    tp = tmp_path / "topo.csv"
    tp.write_text(CONV)
    layers = read_topology(tp)
    assert [x.distinct for x in layers] == [True, True, False]
    mem = scalesim_memory_for(layers, read_cfg(cfg))
    assert mem.exact.tolist() == [True, True, False] and mem.replayed[:2].all()
    out = tmp_path / "ss"
    with contextlib.redirect_stdout(io.StringIO()):
        s = scale_sim.scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(tp),
                               input_type_gemm=False)
        s.run_scale(top_path=str(out))
    rc, text, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 0, err
    assert "note: 1 layer(s) estimated" in text
    for rep in REPORTS:
        theirs = (out / "t" / rep).read_text().splitlines()
        ours = (tmp_path / "o" / rep).read_text().splitlines()
        assert ours[:3] == theirs[:3], rep        # header + the two distinct-address layers


def test_replay_budget_falls_back_to_the_estimate():
    from hwsim.scalesim_memory import scalesim_memory
    exact = scalesim_memory(64, 50, 40, 8, 4, "ws", 1, 1, 1, 10)
    est = scalesim_memory(64, 50, 40, 8, 4, "ws", 1, 1, 1, 10, budget=100)
    assert bool(exact.exact) and bool(exact.replayed) and not bool(est.exact)
    # SCALE-Sim 2.0.2's numbers for this GEMM (printed by the package): 279 stalls, 42,120 + 48,360 reads
    assert (int(exact.stall_cycles), int(exact.ifmap_dram_reads), int(exact.filter_dram_reads)) == (279, 42120, 48360)
    assert int(exact.total_cycles) == 6018 and int(exact.ofmap_dram_writes) == 17920
