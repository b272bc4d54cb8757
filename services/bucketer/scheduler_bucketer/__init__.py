"""scheduler_bucketer."""
