"""MetaProfile's versioned data contracts and typed pipeline configuration.

Bump :data:`SCHEMA_VERSION` whenever a contract changes in a way old readers cannot handle;
configs, manifests and TFRecord specs all carry it.
"""
SCHEMA_VERSION = 1
