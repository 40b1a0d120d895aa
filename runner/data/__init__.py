"""Datasets the runner builds from ``conf/data/*.yaml``: tensors in memory, batched on the device."""
