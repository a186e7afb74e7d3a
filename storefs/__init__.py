"""storefs: cloud buckets and archive vaults as a plain local filesystem."""

__version__ = "0.1.0"
