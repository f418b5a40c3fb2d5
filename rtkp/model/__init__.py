"""The CoKe network, its banks and loss, the heatmap baseline, and checkpoints (torch only)."""
