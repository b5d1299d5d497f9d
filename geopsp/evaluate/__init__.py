"""evaluate: streaming accuracy assessment, metrics, boundary F1 and reports."""
