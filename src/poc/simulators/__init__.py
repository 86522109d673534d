"""Local servers that speak the vendors' documented protocols.

These machines cannot reach ElevenLabs, OpenAI, Cartesia, Azure, Google, D-ID, Tavus, Hedra or Synthesia,
so the tests and `python -m poc bench latency --tts NAME` point each vendor's own SDK (or its
documented HTTP API) at one of these. Each server implements the endpoints, headers, bodies and
streamed formats poc uses, checks what a real vendor checks (the key header, required fields),
and can be told to misbehave the way real services do (429 with Retry-After, 401, a stream that
stalls, audio that does not decode, a job that fails or never finishes).
"""
