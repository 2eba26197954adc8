import subprocess
import sys

import numpy as np
import pytest

from hwsim.cycles import gemm_cycles, scalesim_utilisation
from hwsim.workload import head_macs, layer_macs, vision_macs

from hwsim_helpers import TINY, VIT_B_32


@pytest.mark.parametrize("df,expected", [("os", [137, 21, 131]), ("ws", [167, 29, 323]), ("is", [203, 29, 155])])
def test_cycles_match_scalesim_v2_hand_checked(df, expected):
    # numbers printed by scalesim 2.0.2 (8x8 array, CALC bandwidth) for GEMMs (M,N,K)
    m, n, k = np.array([20, 8, 5]), np.array([12, 8, 17]), np.array([9, 8, 30])
    assert gemm_cycles(m, k, n, 8, 8, df).cycles.tolist() == expected


def test_os_variants():
    s = gemm_cycles(8, 8, 8, 8, 8, "os", "scalesim")
    p = gemm_cycles(8, 8, 8, 8, 8, "os", "paper")
    assert int(s.fold_cycles) == 8 + 8 + 8 - 2 and int(p.fold_cycles) == 2 * 8 + 8 + 8 - 2
    assert int(p.cycles) - int(s.cycles) == 8


def test_utilisation_formulae():
    overall, mapping, compute = scalesim_utilisation(20, 9, 12, 8, 8, "os")
    assert overall == pytest.approx(24.635036496350367)
    assert mapping == pytest.approx(62.5)
    assert compute == pytest.approx(24.456521739130434)


def test_vit_b32_macs_within_1pct_of_open_clip():
    macs = vision_macs(VIT_B_32)
    assert abs(macs / 4.41e9 - 1) < 0.01
    assert macs == 4408811520


def test_tiny_macs_from_geometry():
    g = TINY
    per_block = 50 * 128 * 384 + 2 * 4 * 50 * 32 * 50 + 50 * 128 * 128 + 2 * 50 * 128 * 512
    assert vision_macs(g) == 49 * 192 * 128 + 12 * per_block + 128 * 128
    assert sum(layer_macs(g)) == vision_macs(g)
    assert head_macs(g, 25) == 128 * 128 + 128 * 128 + 128 * 25


def test_hwsim_does_not_import_torch():
    code = ("import sys; import hwsim.cli, hwsim.replay, hwsim.dse, hwsim.scalesim_io, hwsim.costs; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_head_workload_sized_by_exit_head_geometry(monkeypatch):
    """head_gemms / head_vector_ops / head_macs take the head's sizes from ExitHeadGeometry only."""
    from quant.geometry import ExitHeadGeometry
    import hwsim.workload as W
    h = ExitHeadGeometry.of(TINY)
    assert sum(x.macs for x in W.head_gemms(TINY, 25)) == h.macs(25) == W.head_macs(TINY, 25)
    # a head whose hidden width differs from d: every GEMM and vector op follows it
    odd = ExitHeadGeometry(width=TINY.width, hidden=48, embed_dim=TINY.embed_dim)
    monkeypatch.setattr(W.ExitHeadGeometry, "of", classmethod(lambda cls, g: odd))
    assert [(x.k, x.n) for x in W.head_gemms(TINY, 25)] == [(128, 48), (48, 128), (128, 25)]
    assert W.head_macs(TINY, 25) == 128 * 48 + 48 * 128 + 128 * 25
    assert sum(x.macs for x in W.head_gemms(TINY, 25)) == W.head_macs(TINY, 25)
    assert {v.name: v.elems for v in W.head_vector_ops(TINY)}["head_gelu"] == 48
