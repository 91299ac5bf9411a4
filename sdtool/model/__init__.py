"""Models: SDFlow (sdflow.py)."""
