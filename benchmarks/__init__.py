"""Reproduction and speed scripts; run each as a module, e.g. `python -m benchmarks.trial_speed`.
`benchmarks.common` holds what they share (machine description, the results store)."""
