"""Run plumbing around the techniques: Prefect caching and batching, where tasks run, progress and
token accounting, row targets, the run plan, the command line and the Prefect server's hygiene."""
