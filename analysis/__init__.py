"""Analysis room: read runs (DuckDB over Parquet) and return tidy pandas tables."""

from __future__ import annotations

from .engine import connect
from .summary import router_summary

__all__ = ["connect", "router_summary"]
