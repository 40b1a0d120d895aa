"""Datasets the runner builds from ``runner/conf/data/*.yaml``: tensors in memory, batched on the device."""
