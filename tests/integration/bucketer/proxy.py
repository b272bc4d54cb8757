"""Re-export: the proxy lives in scheduler.testing.proxy (shared with the e2e tests)."""

from scheduler.testing.proxy import CuttableProxy

__all__ = ["CuttableProxy"]
