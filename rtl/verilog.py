"""A small Verilog-2005 netlist builder with exact integer ranges (every signal is ``signed``).

Each :class:`Sig` carries the closed integer range ``[lo, hi]`` its value can take; its declared
width is the smallest two's-complement width holding that range, so every ``+``, ``-``, ``*`` and
``<<<`` is exact by construction (Verilog sizes an expression to its left-hand side and, with all
operands signed, sign-extends them first).  The only place where bits are dropped is
:meth:`Module.cast`, which mirrors :func:`exitlogic.fixedpoint.fixed.requant`: quantisation mode
(TRN / RND / RND_CONV) on the dropped fractional bits, then overflow mode (SAT / WRAP).

Unsigned port codes are widened by one zero bit on entry, so no expression ever mixes signed
and unsigned operands (which would make Verilog evaluate it unsigned).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from exitlogic.fixedpoint.fixed import Fmt

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def signed_width(lo: int, hi: int) -> int:
    """Bits of the smallest two's-complement type holding every integer in ``[lo, hi]``."""
    w = 1
    while not (-(1 << (w - 1)) <= lo and hi <= (1 << (w - 1)) - 1):
        w += 1
    return w


def lit(v: int) -> str:
    """A sized signed Verilog literal of the integer ``v`` (negative values as a negated literal)."""
    v = int(v)
    w = abs(v).bit_length() + 1
    return f"{w}'sd{v}" if v >= 0 else f"-{w}'sd{-v}"


def round_shift(c: int, s: int, rounding: str) -> int:
    """``c * 2**-s`` rounded (s >= 0), the Python-int twin of ``fixed._round_shift``."""
    if s <= 0:
        return c << -s
    fl = c >> s
    if rounding == "TRN":
        return fl
    half = 1 << (s - 1)
    if rounding == "RND":
        return (c + half) >> s
    rem = c & ((1 << s) - 1)
    return fl + (1 if rem > half or (rem == half and fl & 1) else 0)


@dataclass(frozen=True)
class Sig:
    """A signed Verilog signal ``name`` whose value lies in ``[lo, hi]`` (declared ``width`` bits)."""

    name: str
    lo: int
    hi: int
    width: int

    def __str__(self) -> str:
        return self.name


class Module:
    """One Verilog module: ports, wires, registers clocked on ``clk``; ``text()`` renders it."""

    def __init__(self, name: str, doc: str = ""):
        if not _IDENT.match(name):
            raise ValueError(f"not a Verilog identifier: {name!r}")
        self.name, self.doc = name, doc
        self.ports: list[str] = ["input wire clk", "input wire rst"]
        self.body: list[str] = []
        self.seq: list[str] = []  # statements inside always @(posedge clk)
        self._n = 0

    # ---- naming -------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self._n += 1
        return f"{base}_{self._n}"

    # ---- ports --------------------------------------------------------------------------
    def input(self, name: str, width: int, signed: bool) -> Sig:
        """An input port of ``width`` bits; returns the signed signal holding its value."""
        if signed:
            self.ports.append(f"input wire signed [{width - 1}:0] {name}")
            return Sig(name, -(1 << (width - 1)), (1 << (width - 1)) - 1, width)
        self.ports.append(f"input wire [{width - 1}:0] {name}")
        s = Sig(f"{name}_s", 0, (1 << width) - 1, width + 1)
        self.body.append(f"wire signed [{width}:0] {s.name} = $signed({{1'b0, {name}}});")
        return s

    def input_bit(self, name: str) -> str:
        self.ports.append(f"input wire {name}")
        return name

    def output(self, name: str, expr: str, width: int) -> None:
        """An output port driven by ``expr`` (its low ``width`` bits)."""
        self.ports.append(f"output wire [{width - 1}:0] {name}")
        self.body.append(f"assign {name} = {expr};")

    # ---- combinational ------------------------------------------------------------------
    def wire(self, base: str, expr: str, lo: int, hi: int, min_width: int = 1) -> Sig:
        w = max(signed_width(lo, hi), min_width)
        s = Sig(self.fresh(base), int(lo), int(hi), w)
        self.body.append(f"wire signed [{w - 1}:0] {s.name} = {expr};")
        return s

    def const_mul(self, base: str, a: Sig, c: int) -> Sig:
        c = int(c)
        return self.wire(base, f"{a} * {lit(c)}", min(a.lo * c, a.hi * c), max(a.lo * c, a.hi * c))

    def mul(self, base: str, a: Sig, b: Sig) -> Sig:
        corners = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        return self.wire(base, f"{a} * {b}", min(corners), max(corners))

    def square(self, base: str, a: Sig) -> Sig:
        hi = max(a.lo * a.lo, a.hi * a.hi)
        lo = 0 if a.lo <= 0 <= a.hi else min(a.lo * a.lo, a.hi * a.hi)
        return self.wire(base, f"{a} * {a}", lo, hi)

    def shl(self, base: str, a: Sig, k: int) -> Sig:
        if k == 0:
            return a
        return self.wire(base, f"{a} <<< {int(k)}", a.lo << k, a.hi << k)

    def add(self, base: str, terms: list[Sig]) -> Sig:
        return self.wire(base, " + ".join(str(t) for t in terms), sum(t.lo for t in terms), sum(t.hi for t in terms))

    def sub(self, base: str, a: Sig, b: Sig) -> Sig:
        return self.wire(base, f"{a} - {b}", a.lo - b.hi, a.hi - b.lo)

    def tree(self, base: str, terms: list[Sig], arity: int = 2) -> Sig:
        """Balanced adder tree (exact) over ``terms``."""
        level = list(terms)
        while len(level) > 1:
            level = [level[i] if i + 1 >= len(level) else self.add(base, level[i:i + arity])
                     for i in range(0, len(level), arity)]
        return level[0]

    def cast(self, base: str, x: Sig, shift: int, fmt: Fmt) -> Sig:
        """``requant``: the exact value ``x * 2**-src_frac`` cast to ``fmt``, ``shift = src_frac - fmt.F``.

        Result: the code of ``fmt`` as a signed signal (range ``[fmt.min_code, fmt.max_code]`` or
        narrower when ``x`` cannot reach the limits)."""
        shift = int(shift)
        if shift > 0:
            if shift >= x.width:  # the part-select below needs the bits: sign-extend first
                x = self.wire(base + "_ext", str(x), x.lo, x.hi, min_width=shift + 1)
            lo, hi = round_shift(x.lo, shift, fmt.rounding), round_shift(x.hi, shift, fmt.rounding)
            if fmt.rounding == "TRN":
                r = self.wire(base + "_trn", f"{x} >>> {shift}", lo, hi)
            elif fmt.rounding == "RND":
                t = self.wire(base + "_rh", f"{x} + {lit(1 << (shift - 1))}", x.lo + (1 << (shift - 1)),
                              x.hi + (1 << (shift - 1)))
                r = self.wire(base + "_rnd", f"{t} >>> {shift}", lo, hi)
            else:
                fl = self.wire(base + "_fl", f"{x} >>> {shift}", x.lo >> shift, x.hi >> shift)
                up = self.fresh(base + "_up")
                half = f"{shift}'d{1 << (shift - 1)}"
                self.body.append(f"wire {up} = ({x}[{shift - 1}:0] > {half}) || "
                                 f"(({x}[{shift - 1}:0] == {half}) && {fl}[0]);")
                r = self.wire(base + "_rc", f"{fl} + $signed({{1'b0, {up}}})", lo, hi)
        else:
            r = self.shl(base + "_sl", x, -shift)
        mn, mx = fmt.min_code, fmt.max_code
        if mn <= r.lo and r.hi <= mx:
            return r
        if fmt.overflow == "SAT":
            return self.wire(base + "_sat", f"({r} > {lit(mx)}) ? {lit(mx)} : (({r} < {lit(mn)}) ? {lit(mn)} : {r})",
                             max(min(r.lo, mx), mn), min(max(r.hi, mn), mx))
        if fmt.signed:
            return self.wire(base + "_wrap", f"$signed({r}[{fmt.W - 1}:0])", mn, mx)
        return self.wire(base + "_wrap", f"$signed({{1'b0, {r}[{fmt.W - 1}:0]}})", mn, mx)

    # ---- sequential ---------------------------------------------------------------------
    def reg(self, base: str, src: Sig, enable: str | None = None) -> Sig:
        """A pipeline register of ``src`` (loaded every clock, or when ``enable``)."""
        s = Sig(self.fresh(base), src.lo, src.hi, src.width)
        self.body.append(f"reg signed [{s.width - 1}:0] {s.name};")
        self.seq.append(f"{s.name} <= {src};" if enable is None else f"if ({enable}) {s.name} <= {src};")
        return s

    def reg_bit(self, base: str, src: str, reset: bool = True) -> str:
        """A 1-bit register (synchronous reset to 0 when ``reset``: the valid pipeline)."""
        n = self.fresh(base)
        self.body.append(f"reg {n};")
        self.seq.append(f"{n} <= rst ? 1'b0 : ({src});" if reset else f"{n} <= {src};")
        return n

    def accumulator(self, base: str, term: Sig, load: str, add: str, lo: int, hi: int) -> Sig:
        """``acc <= load ? term : (add ? acc + term : acc)`` with the range ``[lo, hi]`` it can reach."""
        w = signed_width(lo, hi)
        s = Sig(self.fresh(base), lo, hi, w)
        self.body.append(f"reg signed [{w - 1}:0] {s.name};")
        self.seq.append(f"if ({load}) {s.name} <= {term}; else if ({add}) {s.name} <= {s.name} + {term};")
        return s

    def raw(self, line: str) -> None:
        self.body.append(line)

    def raw_seq(self, line: str) -> None:
        self.seq.append(line)

    # ---- rendering ----------------------------------------------------------------------
    def text(self) -> str:
        head = "".join(f"// {ln}\n" for ln in self.doc.splitlines())
        ports = ",\n  ".join(self.ports)
        body = "\n".join("  " + b for b in self.body)
        seq = "\n".join("    " + s for s in self.seq)
        return (f"{head}`default_nettype none\nmodule {self.name} (\n  {ports}\n);\n{body}\n"
                f"  always @(posedge clk) begin\n{seq}\n  end\nendmodule\n`default_nettype wire\n")
