"""The job queue: procrastinate on prefloop's own database."""
