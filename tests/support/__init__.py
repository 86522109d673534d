"""Helpers the integration tests share: the RTMP server, the service process, stream read-back."""
