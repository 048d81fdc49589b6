"""Stop strings in a stream: a reply is cut at the first stop string, and a tail that could be the
start of one (or half a UTF-8 character) is held back until the next piece tells. The one-at-a-time
path, the batches and the tool-call stream (tool_replies.py) all hold back with `held_back`."""

from __future__ import annotations

from collections.abc import Sequence

from lectern.serve.jobs import Job


class Emitter:
    """Sends a job the new part of its growing text: cut at the first stop string, and holding back
    a tail that could be the start of one (or half a UTF-8 character)."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.text = ""
        self.sent = ""

    def update(self, text: str) -> bool:
        """The whole text so far; True when it reached a stop string (then it is cut and sent)."""
        stops = self.job.sampling.stop
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut >= 0:
            self.text = text[:cut]
            self.flush()
            return True
        self.text = text
        if not text.endswith("\ufffd"):
            self._send(text[: len(text) - held_back(text, stops)])
        return False

    def flush(self) -> None:
        self._send(self.text)

    def _send(self, text: str) -> None:
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self.job.emit(("text", text[len(self.sent) :]))
            self.sent = text


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could be the start of a stop string."""
    longest = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:n]):
                longest = n
                break
    return longest
