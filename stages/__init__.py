"""framechain's stage kinds, one module each, each holding its config next to its
implementation. ``plan.py`` joins them into a chain of processes."""
