"""Training objectives per model family; each returns named loss terms."""
