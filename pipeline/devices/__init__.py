"""Device-update model families, one module each (DOMAIN.md section 3).

``FAMILIES`` lists them in the order model selection prefers on a tie.
"""

from .base import DeviceModel, ParamSpec, StepMap
from .beta import Beta
from .lookup import Lookup
from .neurosim import NeuroSim
from .powstep import PowStep
from .softbounds import SoftBounds

FAMILIES: dict[str, DeviceModel] = {m.name: m for m in
                                    (SoftBounds(), NeuroSim(), PowStep(), Beta(), Lookup())}


def family(name: str) -> DeviceModel:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


__all__ = ["FAMILIES", "family", "StepMap", "DeviceModel", "ParamSpec"]
