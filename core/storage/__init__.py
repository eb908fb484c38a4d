"""Storage: the model store (`store`: atomic writes, checksums, the active model) and the
corrections database (`corrections`: SQLite). Files only; no model runtime."""
