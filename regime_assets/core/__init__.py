"""Pure logic on polars frames. Nothing in this package imports dagster."""
