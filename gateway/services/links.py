"""Link tracking: URLs in a body become <public_base_url>/l/<code>; the first GET there is recorded."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

URL_RE = re.compile(r"https?://[^\s<>\"']+", re.IGNORECASE)
# Trailing punctuation usually ends the sentence, not the URL.
_TRAILING = ".,;:!?)]}"


@dataclass(frozen=True)
class RewrittenLink:
    code: str
    url: str


def new_code() -> str:
    # 16 URL-safe characters, 96 random bits (the column's width): unguessable even at the /l/
    # miss limit summed over many addresses. Older 8-character codes keep working.
    return secrets.token_urlsafe(12)


def rewrite(body: str, base_url: str) -> tuple[str, list[RewrittenLink]]:
    links: list[RewrittenLink] = []

    def repl(match: re.Match[str]) -> str:
        url = match.group(0)
        tail = ""
        while url and url[-1] in _TRAILING:
            tail = url[-1] + tail
            url = url[:-1]
        link = RewrittenLink(new_code(), url)
        links.append(link)
        return f"{base_url}/l/{link.code}{tail}"

    return URL_RE.sub(repl, body), links
