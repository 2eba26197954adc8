"""``lraee profile``: the QIRC layer-wise noise profile of a quantization recipe (profile.json, profile.png)."""
from __future__ import annotations

from pathlib import Path

from analysis.cli.common import add_data_args, add_model_args, add_precision_arg, add_runtime_args, check_out_dir


def register(sub) -> None:
    p = sub.add_parser("profile", help="QIRC profile: per-block quantization noise vs FP32 (JSON + PNG)",
                       description="Runs the FP32 and the quantized image tower on the same images and writes "
                                   "DIR/profile.json (one record per block: d_nat, d_quant, ratio, "
                                   "cos_int8_fp32_pooled, cos_int8_fp32_token_mean, mse, inr, act_absmax, "
                                   "act_kurtosis; definitions in quant/profile.py) and DIR/profile.png.")
    add_model_args(p)
    add_precision_arg(p, default="w8a8")
    add_data_args(p, default_split="calibration")
    add_runtime_args(p)
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from analysis.cli.common import data_settings, model_settings, precision_settings, session_from_args
    from analysis.data.sources import open_source
    from analysis.workflows import profile

    out = Path(args.out)
    check_out_dir(out)
    precision = precision_settings(args)
    data = data_settings(args)
    source = open_source(data.source, args.split, args.n, data.classnames)
    prof = profile(session_from_args(args), model_settings(args), precision, data, out, args.calibration,
                   source=source, split=args.split)
    w = 8
    print(f"{'block':>5} {'d_nat':>{w}} {'d_quant':>{w}} {'ratio%':>{w}} {'cos_pool':>{w}} {'mse':>{w}} "
          f"{'inr':>{w}} {'absmax':>{w}} {'kurt':>{w}}")
    for r in prof["blocks"]:
        print(f"{r['block']:>5} {r['d_nat']:>{w}.4g} {r['d_quant']:>{w}.4g} {100 * r['ratio']:>{w}.2f} "
              f"{r['cos_int8_fp32_pooled']:>{w}.4f} {r['mse']:>{w}.3g} {r['inr']:>{w}.4g} "
              f"{r['act_absmax']:>{w}.4g} {r['act_kurtosis']:>{w}.3g}")
    print(f"cos(final embedding) {prof['cos_embedding']:.4f}; wrote {out / 'profile.json'} and {out / 'profile.png'}")
    return 0
