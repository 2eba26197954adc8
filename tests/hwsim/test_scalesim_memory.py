"""``memory: scalesim`` against the scalesim package (2.0.2), USER bandwidth, small GEMMs.

Inside the regime where every operand's prefetch fits the active half of its buffer (and the
outputs the write buffer's drain half), the three reports are identical to SCALE-Sim's:
COMPUTE_REPORT.csv (stall cycles), BANDWIDTH_REPORT.csv and DETAILED_ACCESS_REPORT.csv
(DRAM read/write counts, SRAM counts, start/stop cycles)."""
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


def test_overflow_is_flagged_and_dram_counts_bounded(tmp_path):
    """1 KiB buffers: operands overflow; we say so (estimates), exact layers still match."""
    from hwsim.scalesim_io import read_cfg, read_topology, scalesim_memory_for
    cfg = tmp_path / "s.cfg"
    cfg.write_text(CFG.format(r=8, c=4, df="ws", kb=1, bw=10))
    tp = tmp_path / "topo.csv"
    tp.write_text(GEMM)
    theirs = _scalesim(tmp_path, cfg, tp)
    mem = scalesim_memory_for(read_topology(tp), read_cfg(cfg))
    assert not mem.exact[4] and mem.exact[[0, 1, 3]].all()
    det = [line.rstrip(",").split(", ") for line in theirs["DETAILED_ACCESS_REPORT.csv"].splitlines()[1:]]
    for i in range(len(det)):
        if mem.exact[i]:
            assert (int(det[i][12]), int(det[i][15]), int(det[i][18])) == (
                int(mem.ifmap_dram_reads[i]), int(mem.filter_dram_reads[i]), int(mem.ofmap_dram_writes[i]))
    rc, out, err = run_cli(["sim", "--scalesim-cfg", str(cfg), "--topology", str(tp), "--out", str(tmp_path / "o")])
    assert rc == 0 and f"{int((~mem.exact).sum())} layer(s) overflow a buffer half" in out
