"""A short scripted demo: publishes a few messages to the running service's queue.

    .venv/bin/python scripts/demo_poc.py [--pause 6]

Uses the same settings as the service (environment / .env), so it talks to the same queue.
"""

from __future__ import annotations

import argparse
import time

import anyio

from poc.config import load_settings
from poc.source.connection import AmqpSettings
from poc.source.publish import build_control, build_text, publish

SCRIPT = [
    ("text", "Hello, and welcome to the stream! I am your virtual host for today."),
    ("text", "Everything I say comes from a message on a RabbitMQ queue."),
    ("text", "This sentence is long on purpose, because in a moment an urgent message will cut it "
             "short, and I will go straight on to the next thing without missing a beat."),
    ("urgent", "Sorry to interrupt: this one jumped the queue."),
    ("text", "And that is the end of the demo. Thanks for watching!"),
]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pause", type=float, default=6.0, help="seconds between messages")
    args = parser.parse_args()
    settings = load_settings(check_files=False)
    amqp = AmqpSettings.from_settings(settings)
    for kind, text in SCRIPT:
        body = build_text(text, interrupt=(kind == "urgent"))
        anyio.run(publish, amqp, body, backend="asyncio")
        print(f"sent {kind}: {text}")
        time.sleep(args.pause if kind != "text" or "long on purpose" not in text else 2.5)
    anyio.run(lambda: publish(amqp, build_control("interrupt"), control=True), backend="asyncio")
    print("sent control: interrupt (nothing should be playing by now)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
