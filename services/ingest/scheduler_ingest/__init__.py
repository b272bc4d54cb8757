"""scheduler_ingest."""
