"""The self-contained demo: a printable target, synthetic training data with exact ground truth, demo videos."""
