"""The dispatcher process: fires due messages at their due instant (README.md)."""
