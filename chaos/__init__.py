"""A randomized fault campaign against the whole system on a private Kafka + Cassandra: a steady
mixed workload, a seeded nemesis, a checker of the guarantees and a report (docs/CHAOS.md)."""
