"""Search spaces shipped with exitsearch (YAML files, loaded by name)."""
