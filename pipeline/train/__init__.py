"""Layer 3: training: `problem` builds model, loss and optimiser from their `_target_` and
puts the data on the device; `engines` train a task's runs (the textbook loop, and the
batched and Gram fast paths that give its numbers)."""
