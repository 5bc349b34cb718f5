"""The l7scope server: ingest, store (DuckDB embedded or ClickHouse), query API, service graph.

The HTTP contract is docs/api.md (its paths and error shape: `contracts/api.py`). Import rules
(checked by `lint-imports`, pyproject.toml): only `store/duckdb.py` imports duckdb, only
`store/arrow_batch.py` pyarrow, only `store/clickhouse.py` clickhouse_driver; starlette and
uvicorn stay inside `server/` (`api.py`, `vendor.py`, `cli.py`).
"""
