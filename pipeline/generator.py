"""Physically motivated synthetic wafer data for HZO ferroelectric synapses.

There is no public HZO wafer data set, so the project ships this generator and a small
wafer made with it (``raw_measurements/sample/``). The ground truth of every device is
written beside the data (``_ground_truth.csv``) so fits can be checked against it.

Model (per device, per pulse width ``t`` and write amplitude ``V``)
-------------------------------------------------------------------
State: the switched-polarisation fraction ``s`` in [0, 1]; read conductance of a
ferroelectric tunnel junction follows it linearly, ``G = Gmin + (Gmax - Gmin) s``.

Switching kinetics, nucleation-limited switching (NLS; Tagantsev et al., PRB 66, 214109
(2002); Jo et al., PRL 99, 267602 (2007)): the domains switch independently with a
Lorentzian distribution of log switching times centred on ``ln tau_m`` with half-width
``w``. The share of the still-unswitched domains that one pulse of width ``t`` switches is

    p(t, V) = p_max * (1/2 + arctan((ln t - ln tau_m(V)) / w) / pi)

so the step per pulse grows with log pulse width. ``tau_m`` follows Merz's law,
``ln tau_m(V) = ln tau_inf + V_a / V_eff``, so it also grows with amplitude.
Because each pulse switches a fixed share of what is left to switch, the expected steps
are state dependent and saturate toward both bounds (soft bounds, DOMAIN.md section 3):

    E[ds+] = p_up (1 - s)          E[ds-] = -p_down s

Imprint: an internal bias ``V_imp`` lowers the effective field for potentiation and
raises it for depression (``V_eff = |V| -/+ V_imp``), and the depolarisation field lets
more of the polarisation back-switch per pulse (``p_max_down > p_max_up``). Hence
``p_up < p_down`` and the symmetry point ``s* = p_up / (p_up + p_down)`` sits at about
0.25-0.33, not mid-range.

Noise: cycle-to-cycle noise multiplies each step by ``1 + sigma_c2c * xi`` (xi standard
normal); the read adds Gaussian noise of ``sigma_read`` relative to G.

Device-to-device variation: a smooth wafer-scale gradient (linear in die x for
``ln tau_inf``, linear in die y for ``V_imp``, radial for ``Gmin``) plus random spread
per die and per device.

Energy of one pulse: ``pipeline.energy.pulse_energy`` (DOMAIN.md section 6),
``E = V^2 G t + C V^2 + 2 Pr A |V| |ds|`` with ``C = eps0 eps_r A / d``. The "measured"
energy column adds 2 % instrument noise.

Defaults and where they come from
---------------------------------
- Grid 5 x 5 dies, 2 devices each; pulse widths 20 ns to 200 us in decades; 3 cycles of
  100 potentiation + 100 depression pulses at +/-2.5 V; read at 0.1 V: the measurement
  protocol of the DOMAIN.md paper (Garg et al. 2025) and its group.
- ``Gmin = 0.4 uS``, ``Gmax / Gmin = 2.65``: Gmax/Gmin of an HZO device (DOMAIN.md s.1);
  microsiemens is typical of a 10 um^2 FTJ.
- Area 10 um^2 (BEOL scale, DOMAIN.md: below 100 um^2), HZO thickness 10 nm,
  eps_r = 30, Pr = 15 uC/cm^2: textbook HZO values. They give about 1.9 pJ per 20 ns
  pulse (DOMAIN.md: about 1-3 pJ at 20 ns), dominated by C V^2; at 200 us the
  resistive V^2 G t term dominates (about 1 nJ).
- ``tau_m(2.5 V) = 50 us``, ``V_a = 10 V``, ``w = 2.5`` (ln units), ``p_max`` 0.15 up /
  0.25 down: chosen so a 20 ns pulse moves about 1-3 % of the remaining range and a
  200 us pulse 8-18 %, i.e. 100 pulses reach most of the range at every width.
- ``sigma_c2c = 0.2`` relative to the step: at a step of ~2 % of the range this is
  about 0.4 % of the range per pulse (DOMAIN.md: c2c variation under 1 %).
- ``sigma_read = 0.002`` relative: 0.2 % read noise of a SMU at 100 nA.

Amplitude staircases (``protocol = "staircase"``, ``GeneratorConfig.staircase()``)
----------------------------------------------------------------------------------
The layout of a Keysight B2912B export of an HZO tunnel junction (DOMAIN.md section 2):
a ``key:<TAB>value`` header (``Chip``, ``Device``, ``Area``, ``pulse_duration_s``...), a
blank line, and a table ``cycle V_write R_neg_ohm R_pos_ohm I_neg_A I_pos_A`` whose
``cycle`` is a running pulse counter over the whole file; no die and no loop column. Each
loop is a read at 0 V, then positive pulses 0.05 ... 1.0 V that *lower* G, then negative
pulses -0.05 ... -1.25 V that raise it, in 50 mV steps; ``cycles`` loops. Every pulse
switches by the same NLS kinetics as above at its own amplitude, so the step grows along
each ramp (``V_eff = |V| -/+ V_imp`` at or below zero switches nothing). ``R_pos_ohm`` is
read at ``+read_voltage_v``, ``R_neg_ohm`` at ``-read_voltage_v`` (an FTJ reads
asymmetrically: ``R_neg = R_pos / read_asymmetry``), each with its own read noise.

The staircase's ground truth is the symmetry point of its *pooled* step maps, the
quantity a staircase fit estimates (each step one update, per direction, all loops):
from the noise-free periodic loop, the expected up and down steps as functions of the
state before them (each ramp visits each state at one amplitude), and the state in the
overlap of the two ramps where their magnitudes are equal and the net step turns from up
to down (the stable crossing, where random updates drift; ``sp_norm``; NaN when none). The staircase defaults describe a junction like the issue's: 0.5 ms pulses,
G about 65-130 nS, ``tau_m(1 V) = 1 ms``, ``V_a = 0.5 V`` (the step about doubles along
a ramp), imprint 0.1 V.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from .energy import EnergyConstants, pulse_energy
from .identifiers import check_identifier

DEFAULT_PULSE_WIDTHS = (2e-8, 2e-7, 2e-6, 2e-5, 2e-4)
INSTRUMENT = "Keysight B1500A (ferroflow generator)"
STAIRCASE_INSTRUMENT = "Keysight B2912B (ferroflow generator)"
PROTOCOLS = ("identical", "staircase")
MAX_FILES, MAX_ROWS = 100_000, 100_000_000  # 400 times the sample wafer
GROUND_TRUTH = "_ground_truth.csv"


@dataclass(frozen=True)
class GeneratorConfig:
    wafer: str = "W01"
    seed: int = 1
    dies_x: int = 5
    dies_y: int = 5
    devices_per_die: int = 2
    pulse_widths_s: tuple[float, ...] = DEFAULT_PULSE_WIDTHS
    cycles: int = 3
    pulses_up: int = 100
    pulses_down: int = 100
    amplitude_v: float = 2.5
    read_voltage_v: float = 0.1
    gmin_siemens: float = 0.4e-6
    on_off_ratio: float = 2.65
    area_m2: float = 10e-12
    thickness_m: float = 10e-9
    eps_r: float = 30.0
    pr_c_per_m2: float = 0.15
    ln_tau_m_ref: float = math.log(50e-6)  # at V_eff = amplitude_v
    v_activation_v: float = 10.0
    nls_width: float = 2.5
    p_max_up: float = 0.15
    p_max_down: float = 0.25
    v_imprint_v: float = 0.5
    sigma_c2c: float = 0.2
    sigma_read: float = 0.002
    energy_noise: float = 0.02
    d2d_gmin: float = 0.05  # lognormal sigma
    d2d_ratio: float = 0.05
    d2d_ln_tau: float = 0.2
    d2d_imprint_v: float = 0.05
    gradient_ln_tau: float = 0.5  # across the wafer in x, edge to centre
    gradient_imprint_v: float = 0.1  # across the wafer in y
    gradient_gmin: float = 0.05  # radial, centre to edge
    protocol: str = "identical"     # or "staircase" (module docstring)
    staircase_step_v: float = 0.05
    staircase_down_v: float = 1.0   # last amplitude of the positive (G-lowering) ramp
    staircase_up_v: float = 1.25    # magnitude of the last negative (G-raising) pulse
    read_asymmetry: float = 1.5     # R_pos / R_neg of the junction

    def check_size(self) -> None:
        """Refuse a wafer too big to write in a working day (``--dies 100000`` would be
        10^11 files), with its size, before anything is written."""
        files = self.dies_x * self.dies_y * self.devices_per_die * len(self.pulse_widths_s)
        rows = files * self.cycles * (self.pulses_up + self.pulses_down)
        if files > MAX_FILES or rows > MAX_ROWS:
            raise ValueError(f"{files:,} files of {rows:,} rows in all is beyond the generator's "
                             f"{MAX_FILES:,} files and {MAX_ROWS:,} rows: use fewer dies, "
                             "devices or cycles")

    @classmethod
    def staircase(cls, **changes) -> "GeneratorConfig":
        """Defaults of the B2912B staircase junction (module docstring), then ``changes``."""
        base = dict(protocol="staircase", pulse_widths_s=(5e-4,), cycles=10, amplitude_v=1.0,
                    ln_tau_m_ref=math.log(1e-3), v_activation_v=0.5, v_imprint_v=0.1,
                    d2d_imprint_v=0.02, gradient_imprint_v=0.04, gmin_siemens=65e-9,
                    on_off_ratio=2.0, area_m2=8300e-12, devices_per_die=1)
        return cls(**{**base, **changes})


@dataclass(frozen=True)
class Device:
    wafer: str
    die: str
    die_x: int
    die_y: int
    device: str
    gmin_siemens: float
    gmax_siemens: float
    ln_tau_inf: float
    v_imprint_v: float


@dataclass
class GeneratedWafer:
    config: GeneratorConfig
    files: list[Path] = field(default_factory=list)
    ground_truth: pd.DataFrame | None = None


def die_name(x: int, y: int) -> str:
    return f"X{x:02d}Y{y:02d}"


def switch_probability(cfg: GeneratorConfig, pulse_width_s: float, v_eff: float,
                       ln_tau_inf: float, p_max: float) -> float:
    """NLS share of unswitched domains switched by one pulse (module docstring)."""
    if v_eff <= 0:
        return 0.0  # the imprint cancels the field: nothing switches
    ln_tau_m = ln_tau_inf + cfg.v_activation_v / v_eff
    return p_max * (0.5 + math.atan((math.log(pulse_width_s) - ln_tau_m) / cfg.nls_width) / math.pi)


def make_devices(cfg: GeneratorConfig, rng: np.random.Generator) -> list[Device]:
    devices = []
    cx, cy = (cfg.dies_x - 1) / 2, (cfg.dies_y - 1) / 2
    ln_tau_inf0 = cfg.ln_tau_m_ref - cfg.v_activation_v / cfg.amplitude_v
    for x in range(cfg.dies_x):
        for y in range(cfg.dies_y):
            u = (x - cx) / max(cx, 1)  # -1..1 across the wafer
            v = (y - cy) / max(cy, 1)
            r2 = (u * u + v * v) / 2
            die_tau = rng.normal(0, cfg.d2d_ln_tau)
            die_imp = rng.normal(0, cfg.d2d_imprint_v)
            for d in range(cfg.devices_per_die):
                gmin = cfg.gmin_siemens * (1 + cfg.gradient_gmin * r2) * math.exp(rng.normal(0, cfg.d2d_gmin))
                ratio = cfg.on_off_ratio * math.exp(rng.normal(0, cfg.d2d_ratio))
                devices.append(Device(
                    wafer=cfg.wafer, die=die_name(x, y), die_x=x, die_y=y, device=f"D{d + 1}",
                    gmin_siemens=gmin, gmax_siemens=gmin * ratio,
                    ln_tau_inf=ln_tau_inf0 + cfg.gradient_ln_tau * u + die_tau
                    + rng.normal(0, cfg.d2d_ln_tau / 2),
                    v_imprint_v=cfg.v_imprint_v + cfg.gradient_imprint_v * v + die_imp
                    + rng.normal(0, cfg.d2d_imprint_v / 2),
                ))
    return devices


def simulate_series(cfg: GeneratorConfig, dev: Device, pulse_width_s: float,
                    rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """One device at one pulse width: the full pulse/read series and its ground truth."""
    p_up = switch_probability(cfg, pulse_width_s, cfg.amplitude_v - dev.v_imprint_v,
                              dev.ln_tau_inf, cfg.p_max_up)
    p_down = switch_probability(cfg, pulse_width_s, cfg.amplitude_v + dev.v_imprint_v,
                                dev.ln_tau_inf, cfg.p_max_down)
    per_cycle = cfg.pulses_up + cfg.pulses_down
    n = cfg.cycles * per_cycle
    up = np.tile(np.r_[np.ones(cfg.pulses_up, bool), np.zeros(cfg.pulses_down, bool)], cfg.cycles)
    noise = 1 + cfg.sigma_c2c * rng.standard_normal(n)
    s, ds = evolve(np.where(up, p_up, p_down), up, noise, 0.02)  # start depressed
    span = dev.gmax_siemens - dev.gmin_siemens
    g_true = dev.gmin_siemens + span * s
    g_read = g_true * (1 + cfg.sigma_read * rng.standard_normal(n))
    amplitude = np.where(up, cfg.amplitude_v, -cfg.amplitude_v)
    energy = pulse_energy(amplitude, g_true, pulse_width_s, ds, cfg.area_m2,
                          EnergyConstants(cfg.eps_r, cfg.thickness_m, cfg.pr_c_per_m2, cfg.area_m2))
    energy = energy * (1 + cfg.energy_noise * rng.standard_normal(n))
    table = pd.DataFrame({
        "Pulse": np.tile(np.arange(1, per_cycle + 1), cfg.cycles),
        "Cycle": np.repeat(np.arange(1, cfg.cycles + 1), per_cycle),
        "V_write_V": amplitude,
        "I_read_A": g_read * cfg.read_voltage_v,
        "E_pulse_pJ": energy * 1e12,
    })
    sp = p_up / (p_up + p_down)
    truth = {
        "wafer": dev.wafer, "die": dev.die, "device": dev.device,
        "die_x": dev.die_x, "die_y": dev.die_y, "pulse_width_s": pulse_width_s,
        "gmin_siemens": dev.gmin_siemens, "gmax_siemens": dev.gmax_siemens,
        "p_up": p_up, "p_down": p_down,
        "sp_norm": sp, "sp_siemens": dev.gmin_siemens + span * sp,
        "sigma_c2c": cfg.sigma_c2c, "sigma_read": cfg.sigma_read,
        "energy_mean_j": float(np.mean(energy)),
        "v_imprint_v": dev.v_imprint_v, "ln_tau_inf": dev.ln_tau_inf,
    }
    return table, truth


def evolve(p: np.ndarray, up: np.ndarray, noise: np.ndarray, state: float):
    """States after each pulse, and each pulse's switched fraction: each pulse switches
    the share ``p`` of what is left to switch in its direction, times its noise factor."""
    s = np.empty(len(p))
    ds = np.empty(len(p))
    for i in range(len(p)):
        step = p[i] * (1 - state) if up[i] else -p[i] * state
        new = min(max(state + step * noise[i], 0.0), 1.0)
        ds[i] = new - state
        s[i] = state = new
    return s, ds


# --- amplitude staircases (module docstring) ----------------------------------------
def staircase_loop(cfg: GeneratorConfig) -> np.ndarray:
    """Write amplitudes of one loop: 0 (a read), 0.05 ... 1.0 V, -0.05 ... -1.25 V."""
    step = cfg.staircase_step_v
    down = step * np.arange(1, round(cfg.staircase_down_v / step) + 1)
    up = -step * np.arange(1, round(cfg.staircase_up_v / step) + 1)
    return np.round(np.r_[0.0, down, up], 6)


def staircase_probabilities(cfg: GeneratorConfig, dev: Device, pulse_width_s: float,
                            amplitude: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(switch probability, up flag, pulse flag) of each amplitude; positive lowers G."""
    up = amplitude < 0
    p = np.array([0.0 if a == 0 else switch_probability(
        cfg, pulse_width_s, abs(a) - dev.v_imprint_v if a < 0 else abs(a) + dev.v_imprint_v,
        dev.ln_tau_inf, cfg.p_max_up if a < 0 else cfg.p_max_down) for a in amplitude])
    return p, up, amplitude != 0


def staircase_truth(p: np.ndarray, up: np.ndarray, pulse: np.ndarray) -> dict:
    """Symmetry point of the pooled noise-free step maps of the periodic loop."""
    state = 0.5
    for _ in range(200):  # the loop map contracts: iterate to its fixed point
        s, ds = evolve(p, up, np.ones(len(p)), state)
        if abs(s[-1] - state) < 1e-12:
            break
        state = s[-1]
    before = np.r_[state, s[:-1]]
    ups, downs = pulse & up, pulse & ~up
    lo = max(before[ups].min(), before[downs].min())
    hi = min(before[ups].max(), before[downs].max())
    sp = float("nan")
    if hi > lo:
        grid = np.linspace(lo, hi, 2001)
        net = (np.interp(grid, *_sorted(before[ups], ds[ups]))
               + np.interp(grid, *_sorted(before[downs], ds[downs])))
        # the stable crossing: net step up below it, down above it (where updates drift)
        cross = np.flatnonzero((net[:-1] > 0) & (net[1:] <= 0))
        if len(cross):
            i = cross[0]
            sp = float(grid[i] - net[i] * (grid[i + 1] - grid[i]) / (net[i + 1] - net[i]))
    return {"sp_norm": sp, "loop_lo": float(s.min()), "loop_hi": float(s.max()),
            "p_up": float(p[ups].mean()), "p_down": float(p[downs].mean()),
            "p_up_min": float(p[ups].min()), "p_up_max": float(p[ups].max()),
            "p_down_min": float(p[downs].min()), "p_down_max": float(p[downs].max())}


def _sorted(x: np.ndarray, y: np.ndarray):
    order = np.argsort(x)
    return x[order], y[order]


def simulate_staircase(cfg: GeneratorConfig, dev: Device, pulse_width_s: float,
                       rng: np.random.Generator) -> tuple[pd.DataFrame, dict]:
    """One device's staircase export table (B2912B layout) and its ground truth."""
    loop = staircase_loop(cfg)
    p, up, pulse = staircase_probabilities(cfg, dev, pulse_width_s, loop)
    truth = staircase_truth(p, up, pulse)
    amplitude = np.tile(loop, cfg.cycles)
    n = len(amplitude)
    noise = 1 + cfg.sigma_c2c * rng.standard_normal(n)
    s, _ = evolve(np.tile(p, cfg.cycles), np.tile(up, cfg.cycles), noise, 0.5)
    span = dev.gmax_siemens - dev.gmin_siemens
    g_true = dev.gmin_siemens + span * s
    g_pos = g_true * (1 + cfg.sigma_read * rng.standard_normal(n))
    g_neg = g_true * cfg.read_asymmetry * (1 + cfg.sigma_read * rng.standard_normal(n))
    table = pd.DataFrame({
        "cycle": np.arange(1, n + 1), "V_write": amplitude,
        "R_neg_ohm": 1 / g_neg, "R_pos_ohm": 1 / g_pos,
        "I_neg_A": -cfg.read_voltage_v * g_neg, "I_pos_A": cfg.read_voltage_v * g_pos,
    })
    sp = truth.pop("sp_norm")
    truth = {
        "wafer": dev.wafer, "die": dev.die, "device": staircase_device(dev),
        "die_x": dev.die_x, "die_y": dev.die_y, "pulse_width_s": pulse_width_s,
        "protocol": "staircase", "gmin_siemens": dev.gmin_siemens, "gmax_siemens": dev.gmax_siemens,
        "sp_norm": sp, "sp_siemens": dev.gmin_siemens + span * sp, **truth,
        "sigma_c2c": cfg.sigma_c2c, "sigma_read": cfg.sigma_read,
        "v_imprint_v": dev.v_imprint_v, "ln_tau_inf": dev.ln_tau_inf,
    }
    return table, truth


def staircase_device(dev: Device) -> str:
    """The export's ``Device`` value: die position and device, e.g. ``02-03-D1``."""
    return f"{dev.die_x:02d}-{dev.die_y:02d}-{dev.device}"


def _staircase_header(cfg: GeneratorConfig, dev: Device, pulse_width_s: float,
                      when: datetime) -> str:
    lines = [
        ("Chip", dev.wafer), ("Device", staircase_device(dev)),
        ("Area", f"{cfg.area_m2 * 1e12:g}"), ("pulse_duration_s", f"{pulse_width_s:g}"),
        ("Instrument", STAIRCASE_INSTRUMENT), ("read_voltage_pos_V", f"{cfg.read_voltage_v:g}"),
        ("read_voltage_neg_V", f"{-cfg.read_voltage_v:g}"),
        ("V_step_V", f"{cfg.staircase_step_v:g}"), ("V_max_pos_V", f"{cfg.staircase_down_v:g}"),
        ("V_max_neg_V", f"{-cfg.staircase_up_v:g}"), ("loops", str(cfg.cycles)),
        ("Timestamp", when.isoformat()),
    ]
    return "".join(f"{k}:\t{v}\n" for k, v in lines) + "\n"


def _format_staircase(table: pd.DataFrame) -> str:
    body = "\n".join(f"{c}\t{v:g}\t{rn:.8g}\t{rp:.8g}\t{i_n:.6g}\t{i_p:.6g}" for c, v, rn, rp, i_n, i_p
                     in table.itertuples(index=False))
    return "\t".join(table.columns) + "\n" + body + "\n"


def _tidy_staircase(cfg: GeneratorConfig, dev: Device, pulse_width_s: float, table: pd.DataFrame,
                    when: datetime) -> pd.DataFrame:
    amp = table["V_write"].to_numpy()
    per_loop = len(staircase_loop(cfg))
    return pd.DataFrame({
        "wafer": dev.wafer, "die": dev.die, "device": staircase_device(dev),
        "pulse_width_s": pulse_width_s, "pulse_amplitude_v": amp,
        "cycle": (table["cycle"].to_numpy() - 1) // per_loop + 1, "pulse": table["cycle"],
        "conductance_state": 1 / table["R_pos_ohm"],
        "direction": np.where(amp > 0, "down", np.where(amp < 0, "up", "read")),
        "read_voltage_v": cfg.read_voltage_v, "die_x": dev.die_x, "die_y": dev.die_y,
        "device_area_m2": cfg.area_m2, "measured_at": when.isoformat(),
    })


def _header(cfg: GeneratorConfig, dev: Device, pulse_width_s: float, when: datetime) -> str:
    lines = [
        ("Instrument", INSTRUMENT),
        ("Wafer", dev.wafer),
        ("Die", dev.die),
        ("Device", dev.device),
        ("Area_um2", f"{cfg.area_m2 * 1e12:g}"),
        ("Pulse duration_ns", f"{pulse_width_s * 1e9:g}"),
        ("Read voltage_V", f"{cfg.read_voltage_v:g}"),
        ("Timestamp", when.isoformat()),
    ]
    return "".join(f"{k}:\t{v}\n" for k, v in lines) + "\n"


def _format_table(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    body = "\n".join(
        f"{p}\t{c}\t{v:g}\t{i:.6g}\t{e:.4g}"
        for p, c, v, i, e in zip(table["Pulse"], table["Cycle"], table["V_write_V"],
                                 table["I_read_A"], table["E_pulse_pJ"]))
    return "\t".join(cols) + "\n" + body + "\n"


def _tidy(cfg: GeneratorConfig, dev: Device, pulse_width_s: float, table: pd.DataFrame,
          when: datetime) -> pd.DataFrame:
    return pd.DataFrame({
        "wafer": dev.wafer, "die": dev.die, "device": dev.device,
        "pulse_width_s": pulse_width_s, "pulse_amplitude_v": table["V_write_V"],
        "cycle": table["Cycle"], "pulse": table["Pulse"],
        "conductance_state": table["I_read_A"] / cfg.read_voltage_v,
        "direction": np.where(table["V_write_V"] > 0, "up", "down"),
        "read_voltage_v": cfg.read_voltage_v, "energy_j": table["E_pulse_pJ"] * 1e-12,
        "die_x": dev.die_x, "die_y": dev.die_y, "device_area_m2": cfg.area_m2,
        "measured_at": when.isoformat(),
    })


def file_stem(dev: Device, pulse_width_s: float) -> str:
    return f"{dev.wafer}_{dev.die}_{dev.device}_{pulse_width_s * 1e9:g}ns"


def generate_wafer(cfg: GeneratorConfig, out: Path, fmt: str = "instrument",
                   progress=None) -> GeneratedWafer:
    """Write one wafer's raw files to ``out``; ``fmt`` is ``instrument`` or ``tidy``.

    Deterministic for ``cfg.seed``. ``progress(done, total)`` is called per device.
    """
    if fmt not in ("instrument", "tidy"):
        raise ValueError(f"unknown format {fmt!r}: use 'instrument' or 'tidy'")
    check_identifier(cfg.wafer, "wafer")  # it names the files written into out
    cfg.check_size()
    if cfg.protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {cfg.protocol!r}: use one of {PROTOCOLS}")
    staircase = cfg.protocol == "staircase"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    devices = make_devices(cfg, rng)
    start = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)
    result = GeneratedWafer(config=cfg)
    truths = []
    k = 0
    for i, dev in enumerate(devices):
        for pw in cfg.pulse_widths_s:
            when = start + timedelta(minutes=7 * k)
            k += 1
            table, truth = (simulate_staircase if staircase else simulate_series)(cfg, dev, pw, rng)
            truths.append(truth)
            stem = file_stem(dev, pw)
            if fmt == "instrument":
                path = out / f"{stem}.txt"
                path.write_text(_staircase_header(cfg, dev, pw, when) + _format_staircase(table)
                                if staircase else _header(cfg, dev, pw, when) + _format_table(table))
            else:
                path = out / f"{stem}.csv"
                tidy = (_tidy_staircase if staircase else _tidy)(cfg, dev, pw, table, when)
                tidy.to_csv(path, index=False, float_format="%.8g")
            result.files.append(path)
        if progress:
            progress(i + 1, len(devices))
    result.ground_truth = pd.DataFrame(truths)
    result.ground_truth.to_csv(out / GROUND_TRUTH, index=False, float_format="%.10g")
    (out / "_generator_config.json").write_text(
        pd.Series(asdict(cfg)).to_json(indent=1))
    return result
