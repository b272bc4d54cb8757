"""How often the services' processes run CPython's cycle collector.

The services allocate several small container objects per message (decoded records, dataclasses,
tuples, futures), nearly all freed by reference counting the moment they are done with. With the
interpreter's default, a young-generation collection runs every 700 net allocations, thousands
of times a second under load, and the older collections it triggers walk every object alive:
with 100,000 attempts held by a dispatcher, two fifths of its firing time went to the collector
(docs/ARCHITECTURE.md, "Garbage collection"). Collecting every YOUNG_THRESHOLD allocations still
frees cyclic garbage, in larger and far fewer passes, for a few megabytes of young objects more.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000  # net allocations of container objects between young collections
OLDER_THRESHOLD = 20  # younger collections between collections of each older generation


def tune_gc() -> None:
    """Called first thing in every service process (and each child it spawns)."""
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)
