"""MetaProfile: lookalike audiences from the Meta-Profile Network (CIKM '20)."""
__version__ = "0.1.0"
