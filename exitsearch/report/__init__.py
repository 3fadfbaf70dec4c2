"""Reports of a run: result files, tables and plots."""
