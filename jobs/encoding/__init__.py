"""The encoder stage: validation, cells and snapshot; ``jobs/encode.py`` runs them."""
