"""housing-mlops: versioned data to a promoted, served model, on Kubernetes or one laptop."""

__version__ = "0.1.0"
