"""The l7scope server: ingest, store (DuckDB embedded or ClickHouse), query API, service graph.

The HTTP contract is docs/api.md. Import rules: only `store/duckdb.py` imports duckdb, only
`store/clickhouse.py` imports clickhouse_driver, only `api.py` imports starlette.
"""
