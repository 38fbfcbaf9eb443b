"""Layer 5: what a person reads: report.html (`page`, from `contents`, `figures`, `html`),
the PNGs beside the tables (`pngs`) and the terminal summary (`summary`)."""
