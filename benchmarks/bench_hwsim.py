"""hwsim benchmark: ratios measured in one run on this machine.

1. Cycle model vs the ``scalesim`` package (v2) on the same GEMMs: the distinct GEMM shapes
   of ViT-B/32 (patch embedding, QKV, one head's QK^T and AV, out-projection, FC1, FC2,
   projection) on a 32x32 array; cycles must be identical; speed-up = scalesim time / ours.
   Also times our model on the *whole* ViT-B/32 (every block, every head).
2. SimPy replay of a 50,000-sample exit trace (target <= 5 s), static / regroup / stream, with
   one group in flight (the default) and with four (pipelined, contended resources).
3. DSE: 1,000 configs x the 50,000-sample trace on a local process pool (target <= 60 s).

Run: ``python benchmarks/bench_hwsim.py`` (about 3-4 minutes; ``--quick`` for a smoke run,
``--dataflows os,ws,is`` to run scalesim on all three).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from quant.geometry import shipped_geometry  # noqa: E402

from hwsim import workload as W  # noqa: E402
from hwsim.closed_form import evaluate  # noqa: E402
from hwsim.config import ArchConfig, arch_from_dict  # noqa: E402
from hwsim.costs import build_costs  # noqa: E402
from hwsim.cycles import gemm_cycles  # noqa: E402
from hwsim.trace import ExitTrace, default_evaluated, synthetic_trace  # noqa: E402

VIT_B_32 = shipped_geometry("ViT-B-32")
TINY = shipped_geometry("lraee-tiny")
CFG = """[general]
run_name = b
[architecture_presets]
ArrayHeight: {r}
ArrayWidth: {c}
IfmapSramSzkB: 256
FilterSramSzkB: 256
OfmapSramSzkB: 128
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Bandwidth: 10
Dataflow: {df}
MemoryBanks: 1
[run_presets]
InterfaceBandwidth: CALC
"""


def bench_cycles(dataflows, quick):
    from hwsim.scalesim_io import read_topology
    try:
        from scalesim.scale_sim import scalesim
    except ImportError:
        print("scalesim not installed: pip install scalesim==2.0.2 (skipping part 1)")
        return
    g = TINY if quick else VIT_B_32
    shapes = [x for x in W.patch_gemms(g) + W.block_gemms(g) + W.final_gemms(g)]
    R = C = 32
    print(f"\n[1] cycle model vs scalesim: {g.model} distinct GEMMs on {R}x{C}")
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        topo = d / "t.csv"
        topo.write_text("Layer, M, N, K,\n" + "".join(f"{s.name}, {s.m}, {s.n}, {s.k},\n" for s in shapes))
        layers = read_topology(topo)
        m = np.array([x.m for x in layers]); k = np.array([x.k for x in layers]); n = np.array([x.n for x in layers])
        for df in dataflows:
            cfg = d / f"{df}.cfg"
            cfg.write_text(CFG.format(r=R, c=C, df=df))
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                s = scalesim(save_disk_space=True, verbose=False, config=str(cfg), topology=str(topo),
                             input_type_gemm=True)
                s.run_scale(top_path=str(d / df))
            t_ss = time.perf_counter() - t0
            theirs = [int(line.split(",")[1]) for line in (d / df / "b" / "COMPUTE_REPORT.csv").read_text().splitlines()[1:]]
            reps = 2000
            t0 = time.perf_counter()
            for _ in range(reps):
                ours = gemm_cycles(m, k, n, R, C, df).cycles
            t_ours = (time.perf_counter() - t0) / reps
            same = ours.tolist() == theirs
            print(f"  {df}: {len(layers)} GEMMs  scalesim {t_ss:8.2f} s   ours {t_ours * 1e6:8.1f} us   "
                  f"speed-up {t_ss / t_ours:12.3g}x   identical cycles: {same}")
    # whole ViT-B/32: all blocks, all heads, all dataflows, through the full cost model (cycles+memory+energy)
    arch = ArchConfig()
    t0 = time.perf_counter()
    reps = 50
    for _ in range(reps):
        build_costs(arch, VIT_B_32, 1000, 1)
    t_full = (time.perf_counter() - t0) / reps
    total = int(sum(gemm_cycles(x.m, x.k, x.n, R, C, "ws").cycles * x.count for x in
                    W.patch_gemms(VIT_B_32) + W.final_gemms(VIT_B_32))) + 12 * int(
        sum(gemm_cycles(x.m, x.k, x.n, R, C, "ws").cycles * x.count for x in W.block_gemms(VIT_B_32)))
    print(f"  whole ViT-B/32 (12 blocks x 12 heads, + exit heads, cycles + memory + energy tables): "
          f"{t_full * 1e3:.2f} ms; ws compute cycles {total:,}")


def make_trace(n, geometry=TINY, cands=(4, 6, 8, 10)):
    el, cor = synthetic_trace(n, geometry.depth, cands, seed=0)
    return ExitTrace([str(i) for i in range(n)], el, default_evaluated(el, cands), cor, cands, geometry.depth, 25,
                     geometry)


def bench_replay(n):
    from hwsim.replay import replay
    tr = make_trace(n)
    print(f"\n[2] SimPy replay of a {n:,}-sample trace ({TINY.model}, 32x32 ws, batch 8; target <= 5 s)")
    # max_in_flight 1: one event per group and layer; 4: per-stage events with contention
    for policy, mif in (("static", 1), ("regroup", 1), ("stream", 1), ("static", 4), ("regroup", 4), ("stream", 4)):
        a = arch_from_dict({"batch": {"policy": policy, "size": 8, "max_in_flight": mif}})
        c = build_costs(a, TINY, 25, a.effective_batch)
        t0 = time.perf_counter()
        r = replay(a, c, tr)
        dt = time.perf_counter() - t0
        print(f"  {policy:8s} max_in_flight {mif}  {dt:6.2f} s   makespan {r['makespan_cycles']:,} cycles   "
              f"{r['throughput_img_s']:.0f} img/s")
    a = ArchConfig()
    c = build_costs(a, TINY, 25, 8)
    t0 = time.perf_counter()
    evaluate(c, tr, "static", 8)
    print(f"  closed form (static, same result as replay): {(time.perf_counter() - t0) * 1e3:.1f} ms")


def bench_issue15(n):
    """Overlapped schedule, pipelined architecture, PE allocation, load sweep (issue 15)."""
    from hwsim.load import load_sweep
    from hwsim.overlap import evaluate_overlapped
    from hwsim.pipelined import allocate_pes, evaluate_pipelined
    from hwsim.replay import replay
    tr = make_trace(n)
    print(f"\n[4] overlap / pipelined / load on a {n:,}-sample trace ({TINY.model})")
    for policy in ("static", "stream", "regroup"):
        a = arch_from_dict({"batch": {"policy": policy, "size": 8}, "overlap": True})
        c = build_costs(a, TINY, 25, a.effective_batch)
        t0 = time.perf_counter()
        r = evaluate_overlapped(a, c, tr)
        dt = time.perf_counter() - t0
        serial = replay(a.model_copy(update={"overlap": False}), c, tr)["makespan_cycles"]
        print(f"  overlap {policy:7s} {dt:6.2f} s ({r['evaluator']})   makespan {r['makespan_cycles']:,} cycles "
              f"(serial {serial:,})")
    p = arch_from_dict({"architecture": "pipelined", "stages": [{"blocks": [1, 6]}, {"blocks": [7, 12]}]})
    t0 = time.perf_counter()
    r = evaluate_pipelined(p, TINY, tr)
    print(f"  pipelined 2 stages  {time.perf_counter() - t0:6.2f} s   {r['throughput_img_s']:.0f} img/s")
    t0 = time.perf_counter()
    _, info = allocate_pes(p, TINY, tr, 2048)
    print(f"  allocate_pes (64 shapes x 2 stages) {time.perf_counter() - t0:6.2f} s   {info['pes']} PEs")
    a = arch_from_dict({"batch": {"policy": "static", "size": 8}})
    t0 = time.perf_counter()
    load_sweep(a, TINY, tr, (0.1, 0.5, 0.9))
    print(f"  load sweep, 3 loads (SimPy, Poisson)  {time.perf_counter() - t0:6.2f} s")


def bench_dse(n_configs, n_samples, workers):
    from hwsim.dse import Space, run_dse
    tr = make_trace(n_samples)
    rows = [8, 16, 32, 64, 128]
    cols = [8, 16, 32, 64, 128]
    dfs = ["os", "ws", "is"]
    kb = [64, 128, 256, 512]
    bs = [1, 2, 4, 8, 16, 32, 64]
    with tempfile.TemporaryDirectory() as d:
        sp = Path(d) / "space.yaml"
        sp.write_text(f"mode: random\nsamples: {n_configs}\nseed: 0\nparameters:\n  array.rows: {rows}\n"
                      f"  array.cols: {cols}\n  array.dataflow: {dfs}\n  sram.filter_kb: {kb}\n  batch.size: {bs}\n")
        print(f"\n[3] DSE: {n_configs:,} configs x {n_samples:,} samples, process pool of {workers} (target <= 60 s)")
        t0 = time.perf_counter()
        s = run_dse(Space(sp), [tr], TINY, Path(d) / "out", workers=workers, progress=False)
        dt = time.perf_counter() - t0
        print(f"  {dt:6.2f} s total ({dt / n_configs * 1e3:.1f} ms/config), {s['pareto_points']} Pareto points")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--dataflows", default="ws", help="scalesim dataflows to compare, e.g. os,ws,is")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: cycles,replay,issue15,dse")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    print(f"hwsim benchmark on {os.cpu_count()} CPUs; numpy {np.__version__}")
    if "cycles" not in skip:
        bench_cycles(a.dataflows.split(","), a.quick)
    if "replay" not in skip:
        bench_replay(2000 if a.quick else 50000)
    if "issue15" not in skip:
        bench_issue15(2000 if a.quick else 50000)
    if "dse" not in skip:
        bench_dse(20 if a.quick else 1000, 2000 if a.quick else 50000, a.workers)


if __name__ == "__main__":
    main()
