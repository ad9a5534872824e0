"""The pure core: validation, placement, the reconcile diff, event schema. No I/O here."""
