"""Open RTL of the exit unit: Verilog emitted from the fixed-point spec, Verilator simulation, Yosys synthesis.

Torch-free; imports ``common``, ``exitlogic.fixedpoint`` and ``hls`` (never ``analysis``).
"""
