"""Frames built once for a fan-out are byte-for-byte what autobahn would send."""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerFactory

from supervisor.relay.web.frames import SharedFrames, text_frame


def test_frames_match_autobahn_for_every_length_class():
    factory = WebSocketServerFactory()
    for size in (0, 1, 125, 126, 65535, 65536, 200_000):
        payload = ("é" * (size // 2) + "x" * (size % 2)).encode("utf-8")[:size]
        assert text_frame(payload) == factory.prepareMessage(payload).payloadHybi, size


def test_the_same_text_object_is_framed_once():
    frames = SharedFrames()
    text = '{"type":"event"}'
    first = frames.frame(text)
    assert frames.frame(text) is first
    other = "".join(['{"type":', '"log"}'])
    assert frames.frame(other) == text_frame(other.encode())
