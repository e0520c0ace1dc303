"""Presentation: PNG charts for Dagster markdown metadata (matplotlib). Core stays free of it."""
