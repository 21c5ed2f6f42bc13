"""The web side: the JSON API, the callback route and the dashboard."""
