"""Command-line front end of exitsearch (installed as ``exitsearch_cli``)."""
