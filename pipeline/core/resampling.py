"""Which rows a resample takes: the one rule the training side and the readers share.

Resample 0 is the original rows; resample -(j+1) leaves row j out (the jackknife);
resample k >= 1 is bootstrap draw k, made by the sweep's scheme from (`sweep.seed`, k)
alone, never from the chunk, the launcher or the device.

A draw is a vector of row numbers (and, for schemes that rebuild y, residual numbers or
weights): `draw` gives those of many runs at once, as a `Draws`, whose `counts` are what
the Gram engine weighs the rows by and whose `rows` are what the textbook loop trains on
(the same multiset: `counts` is their histogram). A scheme is a function of (rows, seed,
resamples, rule, settings) -> Draws (`SCHEMES`), so a new one is one function:

    case            n (x, y) rows drawn with replacement
    residual        every x; y = fitted + the residuals of n rows drawn with replacement
    moving_block,   rows in their order, in blocks of `block_length` rows (moving: starting
    circular_block, in 0..n - b; circular: anywhere, wrapping) or of geometric lengths with
    stationary      mean `block_length` (stationary), from keyed uniforms (`core.schemes`)
    wild            every x; y = fitted + residual * v, v per row Rademacher or Mammen
                    (`wild_weights`), from keyed uniforms

`settings` is `SweepMeta.draw_settings()`: the block length and the wild weights, which
enter the ids of the draws that read them. The block and wild schemes exist only under
the keyed rule (they came after it).

The draw rule (`sweep.json`'s `draw_rule`) says how a draw's random numbers are made:
- `default_rng` (sweeps made before it had a name): row i of draw k is
  `numpy.random.default_rng([seed, k]).integers(0, n, n)[i]`, one generator per draw;
- `splitmix64` (new sweeps): a counter-based generator, row i of draw k is
  floor(n * u / 2^32), u the top 32 bits of the i-th output of SplitMix64 started from
  a key hashed from (seed, k): a draw is a pure function of (seed, k, i), computed for
  all the runs of a task in a few vectorised passes (about 100x faster per draw).
A folder keeps the rule it was started with, so its runs are never trained again.
numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from pipeline.core import schemes as rules
from pipeline.core.meta import DRAW_RULE, DRAW_RULES, KEYED_RULE, LEGACY_RULE
from pipeline.core.runs import CASE, CIRCULAR_BLOCK, MAMMEN, MOVING_BLOCK, RADEMACHER, RESIDUAL, STATIONARY, WILD

__all__ = [
    "DRAW_RULE",
    "DRAW_RULES",
    "Draws",
    "KEYED_RULE",
    "LEGACY_RULE",
    "ROW_STREAM",
    "SCHEMES",
    "Scheme",
    "bootstrap_indices",
    "case_draws",
    "draw",
    "draw_arrays",
    "keyed_bits",
    "keyed_indices",
    "keyed_uniforms",
    "original_fit",
    "resample_rows",
    "resample_size",
    "residual_draws",
    "residual_fit",
]


# Streams of the keyed generator: one per kind of random number a scheme needs, so that
# two kinds drawn for the same (seed, k) are independent. Rows use stream 0.
ROW_STREAM = 0
BLOCK_START_STREAM, BLOCK_LENGTH_STREAM, WILD_STREAM = 1, 2, 3

_MASK = (1 << 64) - 1
_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment (the golden ratio)
_KEY_MULT = np.uint64(0xD1B54A32D192ED03)  # odd constants that spread resample and stream over the key
_STREAM_MULT = np.uint64(0xAEF17502108EF2D9)
_BLOCK = 1 << 16  # numbers per vectorised pass: fits a core's cache


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function, in place on uint64 numbers (arithmetic wraps mod 2^64)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def _keys(seed: int, resamples: np.ndarray, stream: int) -> np.ndarray:
    """(draws,) uint64: the SplitMix64 start of each (seed, resample, stream)."""
    base = _mix(np.array([int(seed) & _MASK], dtype=np.uint64) + _GAMMA)
    k = np.asarray(resamples, dtype=np.int64).astype(np.uint64)  # two's complement: negatives are fine
    stream_term = np.uint64((int(stream) * int(_STREAM_MULT)) & _MASK)  # mod 2^64 in Python: no numpy overflow warning
    return _mix(base + k * _KEY_MULT + stream_term)


def _keyed_blocks(seed: int, resamples: Sequence[int], n: int, stream: int):
    """(start, block) pairs: the first n outputs of SplitMix64 from the keys of draws
    start, start + 1, ..., a few draws at a time, so each block is finished while in cache."""
    keys = _keys(seed, np.asarray(resamples), stream)
    counters = (np.arange(1, n + 1, dtype=np.uint64) * _GAMMA)[None, :]
    per_block = max(1, _BLOCK // max(n, 1))
    block = np.empty((min(per_block, len(keys)), n), dtype=np.uint64)
    for start in range(0, len(keys), per_block):
        part = block[: len(keys[start : start + per_block])]
        np.add(keys[start : start + per_block, None], counters, out=part)
        yield start, _mix(part)


def keyed_bits(seed: int, resamples: Sequence[int], n: int, stream: int = ROW_STREAM) -> np.ndarray:
    """(draws, n) uint64: the first n outputs of SplitMix64 started from each draw's key.

    Output i of draw k depends on (seed, k, stream, i) alone: any subset of draws, in any
    order or batch, gets the same numbers."""
    out = np.empty((len(resamples), n), dtype=np.uint64)
    for start, block in _keyed_blocks(seed, resamples, n, stream):
        out[start : start + len(block)] = block
    return out


def keyed_uniforms(seed: int, resamples: Sequence[int], n: int, stream: int) -> np.ndarray:
    """(draws, n) float64 uniform on [0, 1), 53 bits each: for schemes that need more than rows
    (block lengths, wild weights); give each kind of number its own `stream` (not `ROW_STREAM`)."""
    return (keyed_bits(seed, resamples, n, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def keyed_indices(seed: int, resamples: Sequence[int], n: int, size: int, stream: int = ROW_STREAM) -> np.ndarray:
    """(draws, size) int64 uniform on 0..n-1: the top 32 bits of each output times n, over 2^32
    (integer arithmetic; a bias below n / 2^32)."""
    if not 0 < n < 2**32:
        raise ValueError(f"keyed draws take 1 to 2^32 - 1 rows; got {n}")
    out = np.empty((len(resamples), size), dtype=np.int64)
    for start, bits in _keyed_blocks(seed, resamples, size, stream):
        bits >>= np.uint64(32)
        bits *= np.uint64(n)
        bits >>= np.uint64(32)
        out[start : start + len(bits)] = bits  # < 2^32: the same value as int64
    return out


def bootstrap_indices(n_rows: int, seed: int, resamples: Sequence[int], rule: str = DRAW_RULE) -> np.ndarray:
    """(draws, n_rows) row numbers of bootstrap draws k >= 1: n draws with replacement, in draw order."""
    resamples = np.asarray(resamples, dtype=np.int64)
    if rule == KEYED_RULE:
        return keyed_indices(seed, resamples, n_rows, n_rows)
    if rule == LEGACY_RULE:
        out = np.empty((len(resamples), n_rows), dtype=np.int64)
        for i, k in enumerate(resamples.tolist()):
            out[i] = np.random.default_rng([seed, k]).integers(0, n_rows, size=n_rows)
        return out
    raise ValueError(f"unknown draw rule {rule!r} (known: {', '.join(DRAW_RULES)})")


def resample_size(n_rows: int, resample: int) -> int:
    """Rows a resample trains on: a jackknife resample has one fewer."""
    return n_rows - 1 if resample < 0 else n_rows


@dataclass(frozen=True)
class Draws:
    """What runs of one data size train on, as numbers into the original rows.

    Run i fits x[rows[i]] against y[rows[i]], or, where `rebuilt[i]` (a scheme that rebuilds
    y, e.g. `residual`), against fitted[rows[i]] + resid[residual_rows[i]] * residual_weights[i]
    (fitted, resid: the OLS fit of the original rows; weights 1 when None)."""

    rows: np.ndarray  # (runs, m) int64
    rebuilt: np.ndarray  # (runs,) bool
    residual_rows: Optional[np.ndarray] = None  # (runs, m) int64, read where rebuilt
    residual_weights: Optional[np.ndarray] = None  # (runs, m) float64, read where rebuilt

    def __len__(self) -> int:
        return len(self.rows)

    def counts(self, n_rows: int) -> np.ndarray:
        """(runs, n_rows) int64: how often each run takes each row (its x rows: y as `responses`)."""
        runs, m = self.rows.shape
        flat = (self.rows + (np.arange(runs, dtype=np.int64) * n_rows)[:, None]).reshape(-1)
        return np.bincount(flat, minlength=runs * n_rows).reshape(runs, n_rows) if m else np.zeros((runs, n_rows), int)

    def noise(self, resid: np.ndarray) -> np.ndarray:
        """(rebuilt runs, m) float64: what the rebuilt runs add to the fitted values of their rows,
        resid[residual_rows] * residual_weights (resid: the original OLS fit's residuals, (n,))."""
        at = np.flatnonzero(self.rebuilt)
        residual_rows = self.rows[at] if self.residual_rows is None else self.residual_rows[at]
        noise = np.asarray(resid, dtype=np.float64)[residual_rows]
        return noise if self.residual_weights is None else noise * self.residual_weights[at]

    def responses(self, y: np.ndarray, fitted: Optional[np.ndarray], resid: Optional[np.ndarray]) -> np.ndarray:
        """(runs, m) float64: each run's y, from the original y (n,) and, for rebuilt runs,
        the original OLS fit's fitted values and residuals (n,)."""
        out = np.asarray(y, dtype=np.float64)[self.rows]
        if self.rebuilt.any():
            if fitted is None or resid is None:
                raise ValueError("these draws rebuild y from the OLS fit of the original rows: give fitted and resid")
            at = np.flatnonzero(self.rebuilt)
            out[at] = np.asarray(fitted, dtype=np.float64)[self.rows[at]] + self.noise(resid)
        return out

    def take(self, index: np.ndarray) -> "Draws":
        def pick(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
            return None if a is None else a[index]

        return Draws(self.rows[index], self.rebuilt[index], pick(self.residual_rows), pick(self.residual_weights))


Scheme = Callable[[int, int, np.ndarray, str, Mapping[str, Any]], Draws]


def case_draws(n_rows: int, seed: int, resamples: np.ndarray, rule: str, settings: Mapping[str, Any]) -> Draws:
    """Case resampling: n (x, y) rows drawn with replacement."""
    rows = bootstrap_indices(n_rows, seed, resamples, rule)
    return Draws(rows, np.zeros(len(rows), dtype=bool))


def residual_draws(n_rows: int, seed: int, resamples: np.ndarray, rule: str, settings: Mapping[str, Any]) -> Draws:
    """Residual resampling: every x, y = fitted + the residuals of n rows drawn with replacement
    (the same row numbers case resampling would take)."""
    drawn = bootstrap_indices(n_rows, seed, resamples, rule)
    every = np.broadcast_to(np.arange(n_rows, dtype=np.int64), drawn.shape)
    return Draws(every, np.ones(len(drawn), dtype=bool), drawn)


def _keyed_only(scheme: str, rule: str) -> None:
    if rule != KEYED_RULE:
        raise ValueError(f"the {scheme} scheme draws by the {KEYED_RULE} rule only; got {rule!r}")


def _setting(settings: Mapping[str, Any], key: str, scheme: str) -> Any:
    if settings.get(key) is None:
        raise ValueError(f"the {scheme} scheme needs its {key} (`SweepMeta.draw_settings`); got {dict(settings)}")
    return settings[key]


def _block_draws(scheme: str, rows_of: Callable[[np.ndarray, int, int], np.ndarray]) -> Scheme:
    """A fixed-length block scheme: ceil(n / b) start uniforms per draw, `rows_of` their rows."""

    def draws(n_rows: int, seed: int, resamples: np.ndarray, rule: str, settings: Mapping[str, Any]) -> Draws:
        _keyed_only(scheme, rule)
        length = int(_setting(settings, "block_length", scheme))
        starts = keyed_uniforms(seed, resamples, rules.blocks_needed(n_rows, length), BLOCK_START_STREAM)
        rows = rows_of(starts, n_rows, length)
        return Draws(rows, np.zeros(len(rows), dtype=bool))

    draws.__doc__ = f"{scheme}: rows in blocks of `block_length` (`core.schemes`)."
    return draws


def stationary_draws(n_rows: int, seed: int, resamples: np.ndarray, rule: str, settings: Mapping[str, Any]) -> Draws:
    """Stationary bootstrap: blocks of geometric length, mean `block_length`, starting anywhere, wrapping."""
    _keyed_only(STATIONARY, rule)
    mean = float(_setting(settings, "block_length", STATIONARY))
    starts = keyed_uniforms(seed, resamples, n_rows, BLOCK_START_STREAM)
    lengths = keyed_uniforms(seed, resamples, n_rows, BLOCK_LENGTH_STREAM)
    rows = rules.stationary_rows(starts, lengths, n_rows, mean)
    return Draws(rows, np.zeros(len(rows), dtype=bool))


WILD_WEIGHTS = {RADEMACHER: rules.rademacher_weights, MAMMEN: rules.mammen_weights}


def wild_draws(n_rows: int, seed: int, resamples: np.ndarray, rule: str, settings: Mapping[str, Any]) -> Draws:
    """Wild bootstrap: every x; y = fitted + residual * v, one weight v per row (`wild_weights`)."""
    _keyed_only(WILD, rule)
    weights = str(_setting(settings, "wild_weights", WILD))
    if weights not in WILD_WEIGHTS:
        raise ValueError(f"unknown wild weights {weights!r} (known: {', '.join(WILD_WEIGHTS)})")
    v = WILD_WEIGHTS[weights](keyed_uniforms(seed, resamples, n_rows, WILD_STREAM))
    every = np.broadcast_to(np.arange(n_rows, dtype=np.int64), v.shape)
    return Draws(every, np.ones(len(v), dtype=bool), None, v)


SCHEMES: dict[str, Scheme] = {
    CASE: case_draws,
    RESIDUAL: residual_draws,
    MOVING_BLOCK: _block_draws(MOVING_BLOCK, rules.moving_block_rows),
    CIRCULAR_BLOCK: _block_draws(CIRCULAR_BLOCK, rules.circular_block_rows),
    STATIONARY: stationary_draws,
    WILD: wild_draws,
}


def _fixed_rows(n_rows: int, resample: int) -> np.ndarray:
    """Resample 0 (every row) or jackknife resample -(j+1) (every row but j): no randomness."""
    if resample == 0:
        return np.arange(n_rows, dtype=np.int64)
    if -resample > n_rows:
        raise ValueError(
            f"jackknife resample {resample} leaves out row {-resample - 1}, but the data have {n_rows} rows"
        )
    return np.delete(np.arange(n_rows, dtype=np.int64), -resample - 1)


def draw(
    n_rows: int,
    seeds: Sequence[int],
    resamples: Sequence[int],
    schemes: Sequence[str],
    rule: str = DRAW_RULE,
    settings: Optional[Mapping[str, Any]] = None,
) -> Draws:
    """The draws of many runs (one entry per run), all of one size (`resample_size`).

    Each distinct (seed, scheme, resample) is drawn once, the bootstrap draws of a (seed,
    scheme) together in one call of its scheme; a draw does not depend on which runs are
    asked for together. Bookkeeping in numpy: nothing per run in Python but jackknife rows.
    """
    names, scheme_index = np.unique(np.asarray(schemes, dtype=object).astype(str), return_inverse=True)
    keys = np.column_stack([np.asarray(seeds, np.int64), scheme_index.reshape(-1), np.asarray(resamples, np.int64)])
    distinct, inverse = np.unique(keys, axis=0, return_inverse=True)
    sizes = np.unique(np.where(distinct[:, 2] < 0, n_rows - 1, n_rows))
    if len(sizes) > 1:
        raise ValueError(f"draws of one call must have one size; got {sizes.tolist()} rows (jackknife apart)")
    m = int(sizes[0]) if len(sizes) else n_rows
    rows = np.empty((len(distinct), m), dtype=np.int64)
    rebuilt = np.zeros(len(distinct), dtype=bool)
    own_residual_rows: list[tuple[np.ndarray, np.ndarray]] = []
    residual_weights: Optional[np.ndarray] = None
    for i in np.flatnonzero(distinct[:, 2] <= 0):  # the original rows, and jackknife fits
        rows[i] = _fixed_rows(n_rows, int(distinct[i, 2]))
    drawn = distinct[:, 2] > 0
    for seed, scheme in np.unique(distinct[drawn][:, :2], axis=0):
        name = str(names[scheme])
        if name not in SCHEMES:
            raise ValueError(f"unknown resampling scheme {name!r} (known: {', '.join(SCHEMES)})")
        at = np.flatnonzero(drawn & (distinct[:, 0] == seed) & (distinct[:, 1] == scheme))
        made = SCHEMES[name](n_rows, int(seed), distinct[at, 2], rule, settings or {})
        rows[at], rebuilt[at] = made.rows, made.rebuilt
        if made.residual_rows is not None:
            own_residual_rows.append((at, made.residual_rows))
        if made.residual_weights is not None:
            residual_weights = np.ones(rows.shape) if residual_weights is None else residual_weights
            residual_weights[at] = made.residual_weights
    residual_rows = rows.copy() if own_residual_rows else None  # once every draw's rows are in
    for at, made_rows in own_residual_rows:
        residual_rows[at] = made_rows
    return Draws(rows, rebuilt, residual_rows, residual_weights).take(inverse.reshape(-1))


def resample_rows(n_rows: int, seed: int, resample: int, rule: str = DRAW_RULE) -> np.ndarray:
    """Row numbers of one case resample: all rows for 0, n draws with replacement for k >= 1,
    all rows but row j for jackknife resample -(j+1)."""
    return draw(n_rows, [seed], [resample], [CASE], rule).rows[0]


def draw_arrays(
    x: np.ndarray,
    y: np.ndarray,
    keys: Sequence[tuple[int, int, str]],
    rule: str = DRAW_RULE,
    fit: Optional[tuple[np.ndarray, np.ndarray]] = None,
    settings: Optional[Mapping[str, Any]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(draws, m, columns) x and (draws, m) y that draws (seed, resample, scheme) of one size
    train on, float64; `fit`: `residual_fit` of the original rows (computed when a draw needs it);
    `settings`: the sweep's draw settings (`SweepMeta.draw_settings`)."""
    drawn = draw(len(y), [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], rule, settings)
    if fit is None and drawn.rebuilt.any():
        fit = residual_fit(x, y)
    return np.asarray(x, dtype=np.float64)[drawn.rows], drawn.responses(y, *(fit or (None, None)))


def original_fit(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coefficients, fitted, residuals) of the OLS fit of the original rows, float64 (NaN when
    the features are not finite: x beyond the training dtype's range)."""
    features, y = np.asarray(features, dtype=np.float64), np.asarray(y, dtype=np.float64).reshape(-1)
    if not np.isfinite(features).all():
        nan = np.full(len(y), np.nan)
        return np.full(features.shape[1], np.nan), nan, nan
    beta = np.linalg.lstsq(features, y, rcond=None)[0]
    fitted = features @ beta
    return beta, fitted, y - fitted


def residual_fit(features: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fitted, residuals) of the OLS fit of the original rows: what `residual` draws rebuild y from."""
    return original_fit(features, y)[1:]
