"""pgkeeper: serverless maintenance for production PostgreSQL."""

__version__ = "0.1.0"
