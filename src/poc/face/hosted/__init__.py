"""Talking faces from hosted APIs (D-ID, Tavus, Hedra, Synthesia): one video per message, played on our clock."""

from poc.face.hosted.base import VENDORS, AudioPublisher, HostedFaceClient, HostedFaceError, create_client
from poc.face.hosted.video import decode_video, iter_video

__all__ = [
    "VENDORS",
    "AudioPublisher",
    "HostedFaceClient",
    "HostedFaceError",
    "create_client",
    "decode_video",
    "iter_video",
]
