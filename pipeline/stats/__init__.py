"""Layer 2: the statistics, on plain arrays and DataFrames (numpy, pandas, scipy; no torch).

`intervals` builds the intervals table (`bootstrap_intervals`) from a sweep's estimates:
`cells` splits a grid cell's runs and writes its notes, `draws` reads what each run gives,
`bounds` holds the bootstrap interval formulas, `ols` the closed form (t, hc3),
`studentized` each draw's own standard errors. `prediction` does the same for predicted
values, `raw_units` maps coefficients to the data's own units, `lr_bound` is SGD's
stability bound.
"""
