"""Reporting: run folders -> a long table -> cell statistics and the verdict -> tables,
figures, Markdown and HTML. Imports no torch."""
