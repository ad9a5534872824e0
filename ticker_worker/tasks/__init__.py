"""Celery entrypoints: thin tasks that parse arguments and call one handler."""
