"""Mutation fuzzing of every reader (see campaign.py)."""
