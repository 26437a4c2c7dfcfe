"""lingtrace: cross-lingual TracIn influence for multilingual fine-tuning."""

__version__ = "0.1.0"
