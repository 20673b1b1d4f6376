"""ferroflow: characterization pipeline for ferroelectric synaptic devices.

The library is plain Python (no Prefect); see ``flows/`` for orchestration.
"""

__version__ = "0.1.0"
