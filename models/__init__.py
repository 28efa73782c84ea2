"""The science of Draw.AI: datasets, networks, training, export, the store and the shared schemas.

Nothing is imported here: torch-free modules (settings, schemas, store, datasets) must stay
importable by the API, which has no PyTorch.
"""
