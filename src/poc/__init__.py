"""poc: keeps a live RTMP stream of a talking avatar on air, driven by RabbitMQ messages."""

__version__ = "0.1.0"
