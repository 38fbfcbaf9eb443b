"""Hydra Sweeper plugin `hydra/sweeper=pipeline`: a multirun over the grid's axes is one sweep.

Hydra finds this package by scanning the `hydra_plugins` namespace package (which has no
`__init__.py` of its own, so that other plugins can share it).
"""
