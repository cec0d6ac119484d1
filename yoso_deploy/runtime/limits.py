"""Bounds on the work one pipeline call may ask for, and the admission of that work (numpy-free, torch-free).

Every size a caller controls is bounded: texts per call, characters per text, tokens per call, question
tokens, ``top_k`` and ``max_answer_len``. The defaults are what a QA service would accept; a server raises
them with its flags (``yoso-deploy serve --max-tokens ...``), a library caller with ``Limits(...)``:

    from yoso_deploy.runtime import Limits, pipeline
    qa = pipeline("out/qa", limits=Limits(max_tokens=65536))

A call over a limit raises :class:`LimitError` (a :class:`~yoso_deploy.errors.UsageError`) naming the field,
its size, the limit and the flag that raises it, before any model run -- so ``batch``, the server and in-process
callers are protected alike. Characters are checked before tokenizing (bounded tokenization cost), tokens
before running.

A pipeline may also hold an *admission* (:class:`TokenBudget`): the tokens a call will run are reserved from a
budget shared by every concurrent call before the call runs, and given back when it ends; a call the budget
cannot take now is refused with :class:`OverloadedError` (the server's 503 with ``Retry-After``).
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, fields

from ..errors import UnavailableError, UsageError


class LimitError(UsageError):
    """A call asks for more than a limit allows (HTTP 422; the message names the field, the limit, the flag)."""

    status = 422


class OverloadedError(UnavailableError):
    """The work in flight already fills the budget: try again after ``retry_after`` seconds (HTTP 503)."""

    status = 503

    def __init__(self, message: str = "", retry_after: float = 1.0, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Limits:
    """What one call may ask for (see the module doc). Each field's flag is ``--`` + its name with dashes."""

    max_texts: int = 64  # texts, text pairs, choices or targets in one call
    max_text_chars: int = 100_000  # characters of any one text (question, context, text, prompt, choice)
    max_tokens: int = 16_384  # tokens of one call, all its texts together (a long context: every token once)
    max_question_tokens: int = 256  # tokens of a QA question (it is repeated in every window)
    max_top_k: int = 100  # top_k of qa, classification and fill-mask
    max_answer_len: int = 512  # max_answer_len of qa, in tokens

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UsageError(f"{flag(f.name)} must be a positive integer, got {value!r}")

    def check(self, name: str, value: int, what: str, unit: str = "") -> None:
        """Refuse ``value`` (the size of ``what``) if it exceeds the limit ``name``."""
        limit = getattr(self, name)
        if value > limit:
            shown = f"{value:,}{' ' + unit if unit else ''}"
            raise LimitError(f"{what} is {shown}, over the limit of {limit:,}",
                             fix=f"send less, or raise the limit with {flag(name)} (Limits({name}=...))")

    def check_texts(self, texts: list[str], what: str = "text") -> None:
        """The number of texts and the characters of each."""
        self.check("max_texts", len(texts), f"the number of {what}s")
        for i, t in enumerate(texts):
            self.check("max_text_chars", len(t), f"{what} {i}" if len(texts) > 1 else f"the {what}", "characters")

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def flag(name: str) -> str:
    """The command-line flag of a limit: ``max_tokens`` -> ``--max-tokens``."""
    return "--" + name.replace("_", "-")


class TokenBudget:
    """Tokens in flight across concurrent calls, at most ``capacity``: :meth:`reserve` takes ``n`` for the
    duration of a call or raises :class:`OverloadedError` at once (never queues: the client retries)."""

    def __init__(self, capacity: int, retry_after: float = 1.0):
        if int(capacity) < 1:
            raise UsageError(f"--max-inflight-tokens must be a positive integer, got {capacity!r}")
        self.capacity = int(capacity)
        self.retry_after = float(retry_after)
        self.in_flight = 0
        self.admitted = 0
        self.refused = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def reserve(self, n: int):
        n = max(1, int(n))
        with self._lock:
            if n > self.capacity:
                self.refused += 1
                raise LimitError(f"the request needs {n:,} tokens at once, more than the server's whole budget of "
                                 f"{self.capacity:,}", fix="send less, or raise the budget with --max-inflight-tokens")
            if self.in_flight + n > self.capacity:
                self.refused += 1
                raise OverloadedError(f"the server is busy ({self.in_flight:,} of {self.capacity:,} tokens in flight; "
                                      f"this request needs {n:,})", retry_after=self.retry_after,
                                      fix=f"retry after {self.retry_after:g} s")
            self.in_flight += n
            self.admitted += 1
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= n

    def to_json(self) -> dict:
        return {"capacity": self.capacity, "in_flight": self.in_flight, "admitted": self.admitted,
                "refused": self.refused}
