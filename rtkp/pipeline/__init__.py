"""The streaming pipeline: sources, shared-memory frame ring, smoothing, publishing and the multi-process runner."""
