"""Hardware-aware training simulation on registered device models (torch)."""

from .algorithms import ALGORITHMS as ALGORITHM_STRATEGIES, Algorithm, algorithm_names
from .datasets import Dataset, load_dataset
from .devices import DeviceLayer, DeviceSpec
from .sweep import DEFAULT_VARIANTS, plan, run_sweep, simulate_refs, summarize, sweep_table
from .training import ALGORITHMS, RunSpec, TrainConfig, train

__all__ = ["Algorithm", "ALGORITHM_STRATEGIES", "algorithm_names", "Dataset", "load_dataset", "DeviceLayer", "DeviceSpec", "DEFAULT_VARIANTS", "plan",
           "run_sweep", "simulate_refs", "summarize", "sweep_table", "ALGORITHMS", "RunSpec", "TrainConfig", "train"]
