"""Models the runner builds from ``runner/conf/model/*.yaml``."""
