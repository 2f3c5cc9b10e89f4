"""The scraping runner: headless Chromium behind a small HTTP service (design.md §2)."""
