"""The torch-free ground floor every other package may import: user-facing errors
(:mod:`common.errors`), atomic file output (:mod:`common.atomic`) and content hashing
(:mod:`common.hashing`).

It imports none of the project's other packages (``quant``, ``exitlogic``, ``hls``, ``hwsim``,
``analysis``), and none of torch; a test walks the imports and checks.
"""
