"""A protocol-faithful Kite simulator: ticker WebSocket and REST API on one port."""
