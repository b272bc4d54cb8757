"""The releaser process: claims due buckets and streams them into the ring (README.md)."""
