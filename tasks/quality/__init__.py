"""Quality: the checks that turn a bad generation into a named drop reason, near-duplicate removal,
and the metrics of the quality report."""
