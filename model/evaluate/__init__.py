"""Evaluation: ranking metrics, full-catalogue ranking and the report."""
