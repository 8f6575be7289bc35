"""The relay's HTTPS site: the dashboard's static files and the ``/supervisor`` WebSocket."""
