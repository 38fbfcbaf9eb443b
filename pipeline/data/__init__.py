"""Layer 1: the data a sweep fits, read once, with errors that name the file, column and value.

`load` reads CSV / Parquet (or a generator's frames) into a `Dataset`; `rowfilter`
parses `data.rows`; `generators` make the synthetic data sets the presets name in
`_target_` (`pipeline.data.toy_binary`, ...); `nist` reads NIST StRD reference files.
"""

from pipeline.data.generators import linear_synthetic, sine, toy_binary
from pipeline.data.load import Dataset, load_dataset

__all__ = ["Dataset", "linear_synthetic", "load_dataset", "sine", "toy_binary"]
