"""``lraee hls``: hls4ml projects of the exit blocks, bit-exact C-simulation, resource and latency estimates."""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.cli.common import add_backbone_overrides, check_out_dir
from analysis.workflows import TOKEN_SOURCES
from common.errors import InputError



def add_block_args(p: argparse.ArgumentParser, out_holds: str):
    """The flags every exit-block command shares (``lraee hls``, ``lraee rtl``): --policy, --spec, --out and,
    in the returned "blocks" group, --layers."""
    p.add_argument("--policy", type=Path, required=True, metavar="DIR", help="policy folder (after `lraee thresholds`)")
    p.add_argument("--spec", type=Path, default=None, metavar="FILE",
                   help="fixed-point spec JSON (refused if sized for another policy)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help=f"output folder ({out_holds})")
    g = p.add_argument_group("blocks")
    g.add_argument("--layers", default=None, metavar="L,L", help="candidate layers (default: all of the policy)")
    return g


def register(sub) -> None:
    p = sub.add_parser(
        "hls", help="generate the exit blocks with hls4ml (SSA head, gate + comparator), C-simulate them bit for bit "
                    "against the fixed-point model, estimate resources (hls_report.json)",
        description="One hls4ml project per candidate layer and block under --out (head_L{L}: patch-token mean, "
                    "LayerNorm, MLP; gate_L{L}: 3 -> 1 linear and the threshold comparator), with the fixed-point "
                    "spec's formats (--spec, e.g. the fixedpoint_spec.json of `lraee validate-exits`; default: a "
                    "generous spec sized on the vectors). Each project is compiled with g++ and C-simulated on "
                    "int8 exit-tap tokens of the eval split; outputs must equal the numpy fixed-point model bit for "
                    "bit. Writes DIR/hls_report.json (csim results, DSP/BRAM/LUT/FF, latency and interval; hwsim "
                    "reads latency_cycles/interval_cycles) and DIR/fixedpoint_spec.json. Synthesis needs Vitis HLS "
                    "or Vivado HLS (build_prj.tcl in each project).")
    g = add_block_args(p, "projects + hls_report.json")
    g.add_argument("--blocks", default="head,gate", metavar="B,B", help="head, gate or both (default head,gate)")
    g.add_argument("--backend", default="Vitis", choices=("Vitis", "Vivado"), help="hls4ml backend (default Vitis)")
    g.add_argument("--part", default=None, metavar="PART", help="FPGA part (default xcvu13p-flga2577-2-e)")
    clk = g.add_mutually_exclusive_group()
    clk.add_argument("--clock-mhz", type=float, default=None, help="clock in MHz (default 200)")
    clk.add_argument("--clock-period", type=float, default=None, metavar="NS", help="clock period in ns (default 5)")
    g.add_argument("--io-type", default="io_parallel", choices=("io_parallel", "io_stream"),
                   help="hls4ml io_type (default io_parallel)")
    g.add_argument("--reuse", action="append", default=[], metavar="LAYER=RF",
                   help="ReuseFactor of a layer (ssa, ln, fc1, gelu, fc2, gate; repeatable). Default: Dense layers "
                        "of more than 4096 weights use about 128 multipliers (fc1 at d=768: 4608), others 1")
    g.add_argument("--strategy", action="append", default=[], metavar="LAYER=S",
                   help="Strategy of a Dense layer: Latency or Resource (default: Resource above 4096 weights)")
    g.add_argument("--project", default="lraee", help="prefix of the top-function names (sanitised)")
    g.add_argument("--no-compile", action="store_true", help="only write the projects and the estimates")
    g.add_argument("--rtl-report", type=Path, default=None, metavar="FILE",
                   help="rtl_report.json of `lraee rtl` on the same policy and spec: merge each block's Yosys "
                        "synth_xilinx counts and the estimate/count ratio into hls_report.json")
    v = p.add_argument_group("vectors")
    v.add_argument("--vectors", type=int, default=1000, metavar="N", help="C-simulation vectors per block (default 1000)")
    v.add_argument("--tokens", default="auto", choices=TOKEN_SOURCES,
                   help="where the int8 exit-tap tokens come from: cache (a feature store with tap_tokens in "
                        "--cache-dir, any split, eval preferred), extract (run the backbone on --data/--split, "
                        "cached), derived (deterministic tokens from the cached float features: mean, CLS and SAV "
                        "of the real samples), auto (cached tokens of --split, else extract; default)")
    add_backbone_overrides(p)
    p.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for it in items:
        k, sep, v = str(it).partition("=")
        if not sep or not k or not v:
            raise InputError(f"{flag} {it!r}; allowed: LAYER=VALUE, e.g. {flag} fc1=128")
        out[k.strip()] = v.strip()
    return out


def options_from_args(args):
    from hls.blocks import DEFAULT_CLOCK_NS, DEFAULT_PART, BlockOptions, LayerKnobs

    knobs: dict[str, LayerKnobs] = {}
    for k, v in _pairs(args.reuse, "--reuse").items():
        try:
            rf = int(v)
        except ValueError:
            raise InputError(f"--reuse {k}={v}; allowed: a positive integer") from None
        knobs.setdefault(k, LayerKnobs()).reuse_factor = rf
    for k, v in _pairs(args.strategy, "--strategy").items():
        knobs.setdefault(k, LayerKnobs()).strategy = v.capitalize()
    if args.clock_mhz is not None:
        from analysis.settings import clock_period_ns

        period = clock_period_ns(args.clock_mhz)
    else:
        period = args.clock_period if args.clock_period is not None else DEFAULT_CLOCK_NS
    return BlockOptions(backend=args.backend, part=args.part or DEFAULT_PART, clock_period_ns=period,
                        io_type=args.io_type, project=args.project, knobs=knobs).validate()


def _int_list(s: str | None, flag: str) -> list[int] | None:
    if s is None:
        return None
    try:
        return [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{flag} {s!r}; allowed: comma-separated integers") from None


HLS_FLAGS = {"backend": "--backend", "part": "--part", "clock_mhz": "--clock-mhz", "vectors": "--vectors"}


def block_backbone(args, policy) -> dict:
    """Keywords of the workflow block steps from the flags shared with ``lraee rtl``: where the exit-tap vectors
    come from, and the policy's backbone with the flags given as overrides."""
    from analysis.cli.common import policy_backbone

    model, precision, data = policy_backbone(args, policy)
    return {"tokens": args.tokens, "model": model, "precision": precision, "data": data,
            "calibration": args.calibration, "split": args.split}


def run(args: argparse.Namespace) -> int:
    from analysis.cli.common import session_from_args
    from analysis.settings import HlsCfg, from_args
    from analysis.workflows import hls_blocks
    from exitlogic.artifacts import load_policy

    opts = options_from_args(args)
    out = Path(args.out)
    check_out_dir(out)
    policy = load_policy(args.policy)
    hls = from_args(HlsCfg, argparse.Namespace(backend=opts.backend, part=opts.part, vectors=args.vectors,
                                               clock_mhz=1000.0 / opts.clock_period_ns), HLS_FLAGS)
    report = hls_blocks(session_from_args(args), policy.path, out, hls, spec=args.spec,
                        layers=_int_list(args.layers, "--layers"), blocks=[b.strip() for b in args.blocks.split(",")
                                                                             if b.strip()],
                        options=opts, compile=not args.no_compile, rtl_report=args.rtl_report,
                        **block_backbone(args, policy))
    if report.get("exact_match") is not None and report["exact_match"] < 1.0:
        print(f"lraee hls: C-simulation differs from the fixed-point model (exact-match {report['exact_match']:.4f}); "
              "see hls_report.json")
        return 1
    return 0
