"""Hardware-aware training simulation on registered device models (torch).

Names are loaded on first use (PEP 562): ``pipeline.simulation.catalog`` must stay
importable without torch, which takes seconds to import, so the CLI starts fast.
"""

from importlib import import_module

_WHERE = {
    "Algorithm": "algorithms", "ALGORITHM_STRATEGIES": ("algorithms", "ALGORITHMS"),
    "algorithm_names": "catalog", "Dataset": "datasets", "load_dataset": "datasets",
    "DeviceLayer": "devices", "DeviceSpec": "devices", "DEFAULT_VARIANTS": "sweep",
    "plan": "sweep", "run_sweep": "sweep", "simulate_refs": "sweep", "summarize": "sweep",
    "sweep_table": "sweep", "ALGORITHMS": "training", "RunSpec": "training",
    "TrainConfig": "training", "train": "training",
}
__all__ = list(_WHERE)


def __getattr__(name: str):
    try:
        where = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    module, attr = where if isinstance(where, tuple) else (where, name)
    return getattr(import_module(f".{module}", __name__), attr)
