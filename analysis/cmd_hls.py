"""``lraee hls``: hls4ml projects of the exit blocks, bit-exact C-simulation, resource and latency estimates."""
from __future__ import annotations

import argparse
from pathlib import Path

from analysis.cli_common import add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir
from common.errors import InputError

TOKEN_SOURCES = ("auto", "cache", "extract", "derived")


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
    v = p.add_argument_group("vectors")
    v.add_argument("--vectors", type=int, default=1000, metavar="N", help="C-simulation vectors per block (default 1000)")
    v.add_argument("--tokens", default="auto", choices=TOKEN_SOURCES,
                   help="where the int8 exit-tap tokens come from: cache (a feature store with tap_tokens in "
                        "--cache-dir, any split, eval preferred), extract (run the backbone on --data/--split, "
                        "cached), derived (deterministic tokens from the cached float features: mean, CLS and SAV "
                        "of the real samples), auto (cached tokens of --split, else extract; default)")
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    add_data_args(p)
    add_runtime_args(p)
    p.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for it in items:
        k, sep, v = str(it).partition("=")
        if not sep or not k or not v:
            raise InputError(f"{flag} {it!r}; allowed: LAYER=VALUE, e.g. {flag} fc1=128")
        out[k.strip()] = v.strip()
    return out


def clock_period_ns(mhz: float, flag: str = "--clock-mhz") -> float:
    """The one rule for ``--clock-mhz`` / ``hls.clock_mhz``: a positive, finite number of MHz; the period in ns."""
    import math

    if isinstance(mhz, bool) or not isinstance(mhz, (int, float)) or not math.isfinite(mhz) or not mhz > 0:
        raise InputError(f"{flag} {mhz}; allowed: a positive number (10 to 2000 MHz)")
    return 1000.0 / float(mhz)


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


def extract_tap_vectors(args, policy, layers: list[int], n: int):
    """Run the backbone: exit-tap scales on the calibration split, int8 tokens of ``layers`` on --data/--split."""
    from analysis.cli_common import load_encoder_from_args, prepare_from_args, recipe_from_args, store_kwargs
    from analysis.data.sources import open_source
    from analysis.features import TOKEN_VECTORS, calibrate_token_tap, get_features, split_request
    from quant.tap import TAP_CALIB_N, TokenTap
    from analysis.templates import resolve_templates
    from exitlogic.artifacts import check_key
    from hls.vectors import vectors_from_store

    recipe = recipe_from_args(args)
    tname, templates = resolve_templates(args.templates)
    source = open_source(args.data, args.split, args.n or n, args.classnames)
    calib = open_source(args.calib_data or args.data, "calibration", TAP_CALIB_N, args.classnames)
    enc = load_encoder_from_args(args)
    prepared = prepare_from_args(args, enc, recipe)
    kw = store_kwargs(args)
    tap_kw = {k: v for k, v in kw.items() if k != "dtype"}
    vectors = max(n, TOKEN_VECTORS)
    if policy.meta.get("exit_tap"):  # the policy's own exit-tap scales: the eval store every stage shares
        exit_tap = TokenTap.from_descriptor(policy.meta["exit_tap"])
        req = split_request("eval", exit_tap, enc.geometry.depth, vectors)
    else:
        req = {"tokens": calibrate_token_tap(enc, prepared, calib, layers, **tap_kw), "token_vectors": vectors}
    fs = get_features(enc, source, prepared, tname, templates, **req, **kw)
    check_key(policy, fs.meta["key"], str(fs.path))
    return vectors_from_store(fs.path, layers, n)


def get_vectors(args, policy, layers: list[int]):
    from analysis.features import DEFAULT_CACHE_DIR
    from hls.vectors import derived_vectors, tap_vectors

    n = args.vectors
    if n < 1:
        raise InputError(f"--vectors {n}; allowed: a positive integer")
    cache = Path(args.cache_dir or DEFAULT_CACHE_DIR)
    if args.tokens == "derived":
        return derived_vectors(policy, cache, layers, n)
    if args.tokens in ("auto", "cache"):
        split = args.split if args.tokens == "auto" else None  # auto: only the requested split (eval)
        v = tap_vectors(policy, cache, layers, n, split) if cache.is_dir() else None
        if v is not None and (args.tokens == "cache" or min(t.shape[0] for t in v.tokens.values()) >= n):
            return v
        if args.tokens == "cache":
            raise InputError(f"--cache-dir {cache}: no feature store with exit-tap tokens (tap_tokens) of layers "
                             f"{layers} for the policy's model and recipe; allowed: --tokens extract or derived")
    return extract_tap_vectors(args, policy, layers, n)


def run(args: argparse.Namespace) -> int:
    from exitlogic.artifacts import load_policy
    from hls.flow import run as hls_run

    opts = options_from_args(args)
    out = Path(args.out)
    check_out_dir(out)
    from hls.flow import check_blocks

    blocks = check_blocks(b.strip() for b in args.blocks.split(",") if b.strip())
    policy = load_policy(args.policy)
    if args.spec is not None and not Path(args.spec).is_file():
        raise InputError(f"--spec {args.spec}: file not found")
    layers = _int_list(args.layers, "--layers") or policy.candidate_layers
    bad = [L for L in layers if L not in policy.candidate_layers]
    if bad:
        raise InputError(f"--layers {bad}: not candidate layers of {policy.path}; allowed: {policy.candidate_layers}")
    vectors = get_vectors(args, policy, layers)
    report = hls_run(policy, vectors, out, spec_path=args.spec, layers=layers, blocks=blocks, opts=opts,
                     compile=not args.no_compile)
    if report.get("exact_match") is not None and report["exact_match"] < 1.0:
        print(f"lraee hls: C-simulation differs from the fixed-point model (exact-match {report['exact_match']:.4f}); "
              "see hls_report.json")
        return 1
    return 0
