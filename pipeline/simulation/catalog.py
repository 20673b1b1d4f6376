"""The training algorithms by name, without importing torch.

One table says which algorithms exist, whether each trains on device models, and which
class of ``algorithms`` implements it. The CLI builds its choices from it at start-up
(torch takes seconds to import); training resolves the class only when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AlgorithmInfo:
    name: str       # stored in run tables and registry links
    analog: bool    # trains on device models: needs a device, may shift its SP
    summary: str
    impl: str       # class name in pipeline.simulation.algorithms


CATALOG: dict[str, AlgorithmInfo] = {a.name: a for a in (
    AlgorithmInfo("fp", False, "floating-point SGD baseline", "FloatingPoint"),
    AlgorithmInfo("analog-sgd", True, "plain analog SGD by stochastic pulse trains", "AnalogSGD"),
    AlgorithmInfo("mixed-precision", True, "mixed-precision SGD (digital accumulator)",
                  "MixedPrecision"),
)}


def algorithm_names() -> tuple[str, ...]:
    return tuple(CATALOG)


def algorithm_info(name: str) -> AlgorithmInfo:
    try:
        return CATALOG[name]
    except KeyError:
        raise ValueError(f"unknown algorithm {name!r}; use one of {algorithm_names()}") from None
