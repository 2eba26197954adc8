"""User-given names that reach Verilog identifiers and file names, sanitised (never used raw)."""
from __future__ import annotations

from common.errors import InputError
from common.names import identifier

#: Verilog-2005 / SystemVerilog keywords a module name must not be (lower case)
_KEYWORDS = {
    "always", "and", "assign", "automatic", "begin", "buf", "case", "casex", "casez", "cell", "cmos", "config",
    "deassign", "default", "defparam", "design", "disable", "edge", "else", "end", "endcase", "endconfig",
    "endfunction", "endgenerate", "endmodule", "endprimitive", "endspecify", "endtable", "endtask", "event", "for",
    "force", "forever", "fork", "function", "generate", "genvar", "highz0", "highz1", "if", "ifnone", "initial",
    "inout", "input", "instance", "integer", "join", "large", "liblist", "library", "localparam", "macromodule",
    "medium", "module", "nand", "negedge", "nmos", "nor", "not", "or", "output", "parameter", "pmos", "posedge",
    "primitive", "pull0", "pull1", "pulldown", "pullup", "rcmos", "real", "realtime", "reg", "release", "repeat",
    "rnmos", "rpmos", "rtran", "scalared", "signed", "small", "specify", "specparam", "strong0", "strong1",
    "supply0", "supply1", "table", "task", "time", "tran", "tri", "tri0", "tri1", "triand", "trior", "trireg",
    "unsigned", "use", "vectored", "wait", "wand", "weak0", "weak1", "while", "wire", "wor", "xnor", "xor",
    "logic", "bit", "byte", "int", "shortint", "longint", "class", "interface", "package", "program", "string",
    "tb", "main",
}


def verilog_identifier(name: str, what: str = "--project", max_len: int = 40) -> str:
    """A Verilog identifier (and file-name stem) from user input (:func:`common.names.identifier`, never
    a Verilog keyword)."""
    return identifier(name, what, max_len, _KEYWORDS)


def block_name(kind: str, layer: int) -> str:
    """Folder and module suffix of a block, e.g. ``gate_L9`` (layer an int, kind from rtl.blocks.KINDS)."""
    from .blocks import KINDS

    if kind not in KINDS or not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
        raise InputError(f"block {kind!r} layer {layer!r}; allowed kinds: {', '.join(KINDS)}, layers: integers >= 0")
    return f"{kind}_L{int(layer)}"
