"""Pure domain logic over integer epoch milliseconds: no I/O, no wall clock."""
