"""The Textual app: `AssistantApp` in app.py, one widget per file, styles in app.tcss."""
