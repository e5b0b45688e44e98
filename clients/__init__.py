"""Clients of the caption server: terminal viewer (``python -m clients.viewer``), broadcaster
(``clients.broadcast``), live subtitle writer (``clients.subtitle_writer``) and a browser
overlay (``clients/overlay.html``).

They speak the websocket protocol of docs/protocol.md and import only the event and
protocol modules of ``jrsv_stream`` (never the models).
"""
