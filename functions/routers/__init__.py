"""One router module per resource; `functions.app.create_app` includes each."""
