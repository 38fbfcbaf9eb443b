"""Layer 4: the tables of a sweep folder, from its files alone (no torch, no Hydra).

`aggregate` streams the parts into estimates, curves and intervals; `raw_columns` and
`lr_columns` add the raw-unit and learning-rate-bound columns; `prediction_table` writes
predictions.parquet at `intervals.at`.
"""
