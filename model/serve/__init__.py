"""Ranking a batch of users from online features and a checkpoint (no training code)."""
