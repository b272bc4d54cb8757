"""scheduler_releaser."""
