"""Predictor, localization for surgical planning, writers and the service."""
