"""Python config files, one per BERT size preset (ml_collections + absl's config flag).

Each `PRESET.py` defines `get_config(variant="")`; `common.py` holds the shared field
set, so every preset exposes the same (locked) fields.
"""
