"""Trainers, losses, metrics and experiment tracking."""
