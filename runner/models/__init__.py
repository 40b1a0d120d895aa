"""Models the runner builds from ``conf/model/*.yaml``."""
