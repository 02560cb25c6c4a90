"""Rendering: the Jinja prompt templates in prompts/, a run's overrides of them (`--prompts`), and
models' chat templates as plain data (Magpie's pre-query prefix)."""
