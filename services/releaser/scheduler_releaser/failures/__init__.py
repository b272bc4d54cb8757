"""Failure notices: every message that ends FAILED is sent to its application's failure
destination (a URL or a Kafka topic), if it has one. notice.py: the body and headers;
senders.py: one attempt; notifier.py: lanes, retries, offsets; runtime.py: the dead-letter
consumer; process.py: the child process of the dispatcher that runs it (docs/WEBHOOKS.md,
"Failure notices"; docs/ARCHITECTURE.md, "Failure notices")."""
