"""Re-export: the launcher lives in scheduler.testing.processes (shared with bench/)."""

from scheduler.testing.processes import (
    BIN,
    SERVICES,
    System,
    free_port,
    running_system,
    service_env,
    wait_for,
)

__all__ = ["BIN", "SERVICES", "System", "free_port", "running_system", "service_env", "wait_for"]
