"""Layer 1: the data a sweep fits, read once, with errors that name the file, column and value.

`load` reads CSV / Parquet (or a generator's frames) into a `Dataset`; `rowfilter`
parses `data.rows`; `generators` make the synthetic data sets the presets name in
`_target_` (`pipeline.data.toy_binary`, ...); `nist` reads NIST StRD reference files.
"""

# the `_target_`s that presets and old sweep folders' config.yaml name (pipeline.data.toy_binary, ...)
from pipeline.data.generators import linear_synthetic, sine, toy_binary

__all__ = ["linear_synthetic", "sine", "toy_binary"]
