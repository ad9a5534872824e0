"""The stream holder: Kite connections, placement, reconcile, ticks and the event relay."""
