"""Layer 2: the grid as runs: `plan` expands a config into runs and tasks, `ids` gives each
run its stable id, `migrate` rewrites the ids of a folder made by an older id scheme."""
