"""Adapters that plug the live diagnosis into other training frameworks (each an optional extra)."""
