"""Database -> dataset files: the HPS v1 layout (or Parquet), private and split by prompt.

See docs/dataset-format.md for the contract these files keep.
"""

from bot.export.layout import ExportError
from bot.export.picks import Rater, Reason
from bot.export.run import ExportOptions, ExportResult, export_dataset, is_format, run_export

__all__ = [
    "ExportError",
    "ExportOptions",
    "ExportResult",
    "Rater",
    "Reason",
    "export_dataset",
    "is_format",
    "run_export",
]
