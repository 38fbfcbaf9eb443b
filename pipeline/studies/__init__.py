"""Layer 6: simulation studies built on whole sweeps: `coverage` (interval coverage)."""
