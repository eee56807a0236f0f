"""Oracles: slow, obviously correct scalar definitions that refq's fast code is checked against.

Each module restates one area of refq with Python ``int`` and :class:`fractions.Fraction`
arithmetic straight from the mathematical definition (round half up of ``a*b / 2^31``, round
half away of ``x / 2^e``, ...), one scalar at a time, with no NumPy and no floating point on
integer paths. Where the definition *is* an algorithm (gemmlowp's ``exp_on_negative_values``,
the Newton-Raphson reciprocal), the oracle is a step-by-step scalar restatement and the tests
additionally bound its error against the real function.

Oracles never import the code they check, except in ``self_check`` functions, which compare the
two on seeded random and edge-case inputs at run time (``refq conformance``).

For example :mod:`refq.oracle.fixedpoint` (gemmlowp / TFLite / CMSIS-NN fixed point); one module per
area of refq.
"""
