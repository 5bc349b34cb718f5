"""Stores: one small interface (`base.Store`), an embedded DuckDB and a ClickHouse backend."""
