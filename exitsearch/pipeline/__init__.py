"""The stages of a run and their cache."""
