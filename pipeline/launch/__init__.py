"""Layer 4: from a resolved config to trained parts in the sweep folder.

`prepare` checks everything before launch; `submit` plans tasks and runs them through a
backend (`backends`: debug, local, SLURM), resuming what is done; `task` is the callable
every task runs; `chunking` sizes tasks, `lock` keeps one launch per folder, `local` and
`slurm` talk to local processes and the SLURM controller, `status` says where a sweep stands.
Kept empty so that a task process imports only `task` and what it needs.
"""
