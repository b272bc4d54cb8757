"""Why a message ends ABORTED when its application is gone: one wording for the releaser (which
finds it while releasing a bucket) and the record writer (from the dispatcher's SKIPPED result,
decided by `dispatcher.verdict.fire_check`)."""

from __future__ import annotations

from scheduler.store.ports import Application

APP_DELETED = "application deleted"
APP_NOT_FOUND = "application not found"


def gone_reason(app: Application | None) -> str | None:
    """The ABORTED reason for messages of `app`, or None while it exists."""
    if app is None:
        return APP_NOT_FOUND
    if app.deleted_ms is not None:
        return APP_DELETED
    return None
