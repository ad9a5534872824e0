"""Reliability tests of DESIGN 6.2: each injects a fault into a real stack and checks recovery."""
