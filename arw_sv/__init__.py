"""arw-sv: fair speaker verification with adversarial reweighting."""

__version__ = "0.1.0"
