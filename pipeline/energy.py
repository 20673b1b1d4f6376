"""Energy of one programming pulse (DOMAIN.md section 6).

    E = V^2 G t  +  C V^2  +  2 Pr A |V| s

resistive/leakage (linear in the width t), charging of the capacitor ``C = eps0 eps_r A / d``,
and polarisation switching (``s`` the switched fraction in that pulse). At 20 ns the
width-independent terms dominate; at 0.2 ms the resistive one does.

Measured energy (integrated V*I over the pulse) is used where the raw data has it;
``pulse_energy`` is the fallback, with material constants from ``EnergyConstants``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schema import StateScale

EPS0 = 8.8541878128e-12  # F/m


@dataclass(frozen=True)
class EnergyConstants:
    """HZO textbook values; override per stack."""

    eps_r: float = 30.0              # relative permittivity of HZO
    thickness_m: float = 10e-9       # ferroelectric thickness
    pr_c_per_m2: float = 0.15        # remanent polarisation, 15 uC/cm^2
    area_m2: float = 10e-12          # used when the data gives no device area


def capacitance_f(area_m2: float, c: EnergyConstants = EnergyConstants()) -> float:
    return EPS0 * c.eps_r * area_m2 / c.thickness_m


def pulse_energy(amplitude_v, conductance_siemens, pulse_width_s, switched_fraction=0.0,
                 area_m2: float | None = None, c: EnergyConstants = EnergyConstants()):
    """Energy in joules of pulses (numpy broadcasting over the arguments)."""
    area = c.area_m2 if area_m2 is None else area_m2
    v = np.abs(np.asarray(amplitude_v, dtype=float))
    return (v ** 2 * np.asarray(conductance_siemens) * pulse_width_s + capacitance_f(area, c) * v ** 2
            + 2 * c.pr_c_per_m2 * area * v * np.abs(switched_fraction))


@dataclass(frozen=True)
class PulseEnergy:
    energy_j: float       # mean energy per pulse
    source: str           # "measured" or "formula"
    n_pulses: int


def energy_per_pulse(energy_j, amplitude_v, state, pulse_width_s, state_unit: str = "S",
                     area_m2: float | None = None,
                     constants: EnergyConstants = EnergyConstants()) -> PulseEnergy:
    """Mean energy per pulse of one device series.

    Measured ``energy_j`` where every pulse has it; otherwise the formula with the
    pulses' amplitude, conductance and width, the device area when known, and the
    switched fraction of each pulse taken as its share of the conductance range.
    """
    e = np.asarray(energy_j, dtype=float)
    if len(e) and np.isfinite(e).all():
        return PulseEnergy(float(e.mean()), "measured", len(e))
    g = np.asarray(state, dtype=float)
    amp = np.asarray(amplitude_v, dtype=float)
    if state_unit != "S" or not np.isfinite(amp).all():
        return PulseEnergy(float("nan"), "unavailable (no amplitude, or state not in S)", len(g))
    scale = StateScale.of(g, state_unit)
    switched = np.abs(scale.g_step(np.diff(g, prepend=g[0]))) if scale.span > 0 else 0.0
    return PulseEnergy(float(np.mean(pulse_energy(amp, g, pulse_width_s, switched, area_m2,
                                                  constants))), "formula", len(g))
