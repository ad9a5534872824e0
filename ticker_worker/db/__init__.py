"""Postgres adapter: typed models, the engine factory and the repositories."""
