"""Layer 0: what every other layer shares and nothing of ours below it.

`errors` (what users see and catch), `runs` (a run, a task and their results),
`settings` (typed config sections that cross into tasks), `meta` (what a sweep folder
says about itself) and `resampling` (which rows a resample takes). numpy only.
"""
