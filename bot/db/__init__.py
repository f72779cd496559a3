"""Database access: models, engine and session factories, the embedded server."""
