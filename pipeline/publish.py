"""Turn a fit result into registered device-model versions (one per wafer and pulse width)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .devices import family as get_family
from .fitrecords import DeviceFit, FamilyFit, state_summary
from .fitting import SERIES_COLUMNS, FitConfig, FitResult
from .registry import Ref, Registry, model_name
from .schema import StateScale
from .store import MeasurementStore

DEFAULT_STACK = "hzo"


@dataclass(frozen=True)
class Registered:
    ref: Ref
    created: bool
    wafer: str
    pulse_width_s: float


def _pivots(result: FitResult, fam: str, cache: dict | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Values and standard errors of one family's fits, one row per series (over every
    wafer and pulse width: pivoted once per family when ``cache`` is kept across calls)."""
    if cache is not None and fam in cache:
        return cache[fam]
    params = result.params[result.params.family == fam]
    out = (params.pivot_table(index=SERIES_COLUMNS, columns="param", values="value").add_prefix("p_"),
           params.pivot_table(index=SERIES_COLUMNS, columns="param", values="stderr").add_prefix("e_"))
    if cache is not None:
        cache[fam] = out
    return out


def version_tables(result: FitResult, wafer: str, pulse_width_s: float, cache: dict | None = None):
    """(devices, population, meta) of one wafer and pulse width, in the registry's format.
    ``cache``: a dict kept across the calls for one ``result``."""
    devs = result.devices[(result.devices.wafer == wafer) & (result.devices.pulse_width_s == pulse_width_s)]
    pop = result.population[(result.population.wafer == wafer)
                            & (result.population.pulse_width_s == pulse_width_s)]
    fam = pop["family"].iloc[0] if len(pop) else None
    if fam is None or pd.isna(fam):
        return None
    key = SERIES_COLUMNS
    fits = result.fits[(result.fits.family == fam)][key + list(FamilyFit.REGISTRY_COLUMNS)]
    values, errors = _pivots(result, fam, cache)
    rows = (devs[key + list(DeviceFit.REGISTRY_COLUMNS)].rename(columns={"family": "chosen_family"})
            .merge(fits, on=key).merge(values.reset_index(), on=key).merge(errors.reset_index(), on=key))
    ok = rows["chosen_family"].notna() & (rows["flag"] == "")
    rows = rows[ok].reset_index(drop=True)
    state_unit = str(devs["state_unit"].iloc[0])
    # from the population family's fit: a device's own chosen family (``devices``) may differ
    summary = state_summary(StateScale(rows["norm_lo"], rows["norm_span"], state_unit),
                            rows["sp_g"], rows["sp_g_err"], rows["range_lo_g"], rows["range_hi_g"])
    for name in DeviceFit.REGISTRY_STATE_COLUMNS:
        rows[name] = summary[name]
    energy = rows["energy_per_pulse_j"]
    meta = {
        "wafer": wafer, "pulse_width_s": float(pulse_width_s), "family": fam,
        "equation": get_family(fam).equation, "state_unit": state_unit,
        "n_devices": int(len(devs)), "n_failed": int(len(devs) - len(rows)),
        "sp_norm_median": float(rows["sp_norm"].median()) if len(rows) else None,
        "r2_median": float(rows["r2_trace"].median()) if len(rows) else None,
        "energy_per_pulse_j": float(energy.median()) if energy.notna().any() else None,
        "energy_source": str(rows["energy_source"].mode().iloc[0]) if len(rows) else None,
        "units": "parameters p_* are in normalised state g; state = norm_lo + norm_span * g",
        **_protocol_meta(devs),
    }
    return rows, pop.drop(columns=["wafer", "pulse_width_s"]).reset_index(drop=True), meta


def _protocol_meta(devs: pd.DataFrame) -> dict:
    """Measurement protocol and write-amplitude range per direction over the devices."""
    if "protocol" not in devs:
        return {}
    out = {"protocol": str(devs["protocol"].mode().iloc[0])}
    for d in ("up", "down"):
        lo, hi = devs[f"amplitude_{d}_min_v"].min(), devs[f"amplitude_{d}_max_v"].max()
        out[f"amplitude_{d}_v"] = [float(lo), float(hi)] if pd.notna(lo) else None
    return out


def register_fit(registry: Registry, result: FitResult, *, store: MeasurementStore | None = None,
                 stack: str = DEFAULT_STACK, config: FitConfig = FitConfig(),
                 tags: tuple[str, ...] = (), store_version: int | None = None) -> list[Registered]:
    """Register every (wafer, pulse width) of ``result``; identical content is not duplicated.

    ``store_version`` is the measurement-store version the fit read (recorded so the
    model can be refitted from exactly that data: ``ferroflow fit --as-of``)."""
    out, cache = [], {}
    for (wafer, pw), _ in result.devices.groupby(["wafer", "pulse_width_s"], sort=True):
        tables = version_tables(result, wafer, pw, cache)
        if tables is None:
            continue
        devices, population, meta = tables
        meta = {**meta, "stack": stack, "fit_config_hash": config.hash(),
                "store_version": store_version}
        raw = store.source_files(wafer, pw) if store is not None else None
        ref, created = registry.register(model_name(stack, wafer, pw), devices, population, meta,
                                         raw_files=raw, tags=tags)
        out.append(Registered(ref, created, wafer, float(pw)))
    return out


__all__ = ["register_fit", "version_tables", "Registered", "DEFAULT_STACK"]


def fit_and_register(registry: Registry, store: MeasurementStore, wafer: str,
                     pulse_width_s: float | None = None, *, stack: str = DEFAULT_STACK,
                     config: FitConfig = FitConfig(), progress=None,
                     as_of: int | None = None) -> tuple[FitResult, list[Registered]]:
    """Fit what the store holds for a wafer (or one of its pulse widths) at its current
    version, or at version ``as_of``, and register it with the version it read."""
    from .errors import InputError
    from .fitting import fit_series_list
    from .traces import FRAME_COLUMNS, series_from_frame

    version = store.version() if as_of is None else as_of
    widths = ([pulse_width_s] if pulse_width_s is not None else
              [pw for w, pw in store.partitions() if w == wafer])  # a superset of older versions'
    series = []
    for pw in widths:  # one pulse width at a time: a wafer's rows never all sit in memory
        # series_from_frame orders the rows itself
        series += series_from_frame(store.read(wafer=wafer, pulse_width_s=pw, columns=FRAME_COLUMNS,
                                               as_of=version, sort=False))
    if not series:
        raise InputError(f"no stored data for wafer {wafer!r}"
                         + (f" at pulse width {pulse_width_s:g} s" if pulse_width_s else "")
                         + f" in {store.root}" + (f" at version {as_of}" if as_of is not None
                                                   else " (ingest first)"))
    series.sort(key=lambda s: s.key)  # the order series_from_frame gives a whole wafer
    result = fit_series_list(series, config, progress=progress)
    return result, register_fit(registry, result, store=store, stack=stack, config=config,
                                store_version=version)
