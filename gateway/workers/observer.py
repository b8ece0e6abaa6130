"""What the workers report for monitoring. gateway/http/metrics.Metrics implements it; the
workers depend only on this protocol, so they need no HTTP code and tests can omit it."""

from __future__ import annotations

from typing import Protocol


class Observer(Protocol):
    def submit_done(self, seconds: float, ok: bool, account: str = "", connector: str = "") -> None: ...

    def receipt(self, state: str = "") -> None: ...

    def settled(self, status: str, seconds: float | None) -> None: ...

    def mo(self, connector: str = "") -> None: ...

    def webhook(self, status_code: int | None) -> None: ...

    def call_started(self) -> None: ...

    def call_ended(self) -> None: ...

    def left_audio(self, kind: str) -> None:
        """A caller's voicemail or a script's recording stored (kind: voicemail, recording)."""


class NullObserver:
    def submit_done(self, seconds: float, ok: bool, account: str = "", connector: str = "") -> None:
        pass

    def receipt(self, state: str = "") -> None:
        pass

    def settled(self, status: str, seconds: float | None) -> None:
        pass

    def mo(self, connector: str = "") -> None:
        pass

    def webhook(self, status_code: int | None) -> None:
        pass

    def call_started(self) -> None:
        pass

    def call_ended(self) -> None:
        pass

    def left_audio(self, kind: str) -> None:
        pass
