"""Metrics of the web console, declared once, on the registry the ingest app is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class ConsoleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sign_ins = Counter(
            "scheduler_console_sign_ins_total",
            "Console sign-in attempts, by outcome (ok, refused).",
            ["outcome"],
            registry=registry,
        )
        self.refused_posts = Counter(
            "scheduler_console_refused_posts_total",
            "Console form posts refused before any change, by reason (csrf, origin, too_large).",
            ["reason"],
            registry=registry,
        )
        self.actions = Counter(
            "scheduler_console_actions_total",
            "Console state changes that succeeded, by action.",
            ["action"],
            registry=registry,
        )
