"""The files in ``state_dir``: one module per file, each the only code that reads or writes it."""
