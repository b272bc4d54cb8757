"""Re-export: the receivers live in scheduler.testing.receiver (shared with bench/ and the demo)."""

from scheduler.testing.receiver import Arrival, Arrivals, HttpReceiver, KafkaReceiver

__all__ = ["Arrival", "Arrivals", "HttpReceiver", "KafkaReceiver"]
