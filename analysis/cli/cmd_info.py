"""``lraee info``: the encoder geometry (the one source of truth), as a table or JSON."""
from __future__ import annotations

import json

from analysis.cli.common import add_model_args

LIST_RECIPES = "<list>"  # ``--precision`` given without a value


def register(sub) -> None:
    p = sub.add_parser("info", help="print an encoder's geometry (depth, width, tokens, params, MACs)",
                       description="Print the geometry of an open_clip ViT image tower. Without --pretrained a "
                                   "named model is built with random weights (geometry does not depend on them).")
    add_model_args(p)
    p.add_argument("--json", action="store_true", help="print JSON (what torch-free packages consume)")
    p.add_argument("--list-models", action="store_true", help="list the open_clip ViT config names and exit")
    p.add_argument("--precision", default=None, nargs="?", const=LIST_RECIPES, metavar="P",
                   help="also list what recipe P (fp32, int8-dynamic, w8a8, wXaY, with modifiers such as w8a8+sq) "
                        "quantizes and what stays float; without P: list the recipes and modifiers and exit")
    p.set_defaults(func=run)


def geometry_record(enc) -> dict:
    """Geometry dict plus the image tower's MAC count from hwsim's workload model."""
    from hwsim.workload import vision_macs

    d = enc.geometry.to_dict()
    d["macs"] = int(vision_macs(enc.geometry))
    d["pretrained"] = enc.pretrained
    return d


def run(args) -> int:
    from quant.encoder import load_encoder, vit_model_names

    if args.list_models:
        print("\n".join(["tiny"] + vit_model_names()))
        return 0
    if args.precision == LIST_RECIPES:
        return _list_recipes(args.json)
    recipe = None
    if args.precision is not None:
        from quant.recipes import parse_precision

        recipe = parse_precision(args.precision)
    enc = load_encoder(args.model, args.pretrained, force_quick_gelu=args.force_quick_gelu,
                       random_init=args.pretrained is None)
    rec = geometry_record(enc)
    if recipe is not None:
        rec["precision"] = {"recipe": recipe.descriptor(), "quantized": list(recipe.quantized_parts()),
                            "float": list(recipe.float_parts())}
    if args.json:
        print(json.dumps(rec, indent=2))
        return 0
    prec = rec.pop("precision", None)
    for k, v in rec.items():
        print(f"{k:>16}  {v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{k:>16}  {v}")
    if prec is not None:
        print(f"\nprecision {prec['recipe']['precision']}")
        for what in ("quantized", "float"):
            print(f"  {what}:")
            for item in prec[what] or ["(nothing)"]:
                print(f"    - {item}")
    return 0


def _list_recipes(as_json: bool) -> int:
    """The recipe and modifier registries (:func:`quant.recipes.registry_listing`)."""
    from quant.recipes import registry_listing

    reg = registry_listing()
    if as_json:
        print(json.dumps(reg, indent=2))
        return 0
    print("recipes (--precision BASE[+MODIFIER...]):")
    for r in reg["recipes"]:
        print(f"  {r['grammar']}")
        print(f"      {r['summary']}")
        print(f"      bits: {r['bits']}; calibration: {'yes' if r['calibration'] else 'no'}")
    print("modifiers:")
    for m in reg["modifiers"]:
        print(f"  {m['grammar']}")
        print(f"      on: {m['applies_to']}")
        print(f"      {m['summary']}")
    print(f"scales (static): {', '.join(reg['scales'])}; calibration methods: {', '.join(reg['calib_methods'])}")
    return 0
