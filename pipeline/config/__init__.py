"""Layer 1: the config: its schema and resolvers (`schema`), composing `conf/` with
command-line overrides into one resolved dict (`compose`), the shipped configs and data
sets (`shipped`) and the `intervals.at` points (`points`)."""
