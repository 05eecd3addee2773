"""The pure core: no I/O library is imported below this package (import-linter checks it)."""
