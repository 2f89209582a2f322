"""Mutated policy files for the validator's fuzz test: each one a careless operator's or
an attacker's edit of a good policy. Deterministic for a given random generator."""

from __future__ import annotations

import random
import re

# Values that have crashed or fooled validators: wrong types, out-of-range and special
# numbers, addresses no host can own, YAML features that build huge or cyclic trees.
NASTY_VALUES = (
    "1.0", ".inf", "-.inf", ".nan", "-1", "0", "65536", "4294967296", "1e400",
    "99999999999999999999", "9" * 5000, "99999999999999999999tbit", "0.000001bit",
    "0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "10.0.0.256", "::1",
    "ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "00:00:00:00:00:00", "\uff18\uff10",
    "null", "~", "''", "true", "[]", "{}", "[" * 1200 + "]" * 1200, "{a: " * 300 + "1" + "}" * 300,
    "&a [*a]", "&b {k: *b}", "!!python/object/apply:os.system [id]", "!!binary aGk=",
    "\x00", "\x1b[2J", "a\r\nforged: line", "\u202e", "x" * 70000, "*undefined",
    "2026-01-01", "0x50", "0o777", "1_000", "+80", "80.5", "tcp\n", "'tcp'",
)
TOP_LEVEL_EXTRAS = ("bogus: null", "bogus: 1", "version: 1.0", "version: '1'", "version: 2",
                    "vnfs: null", "classes: {}", "chains: [null]", "<<: {x: 1}")
CHARS = ("\x00", "\xff", "\t", "\r", "\n", ":", "-", "[", "]", "{", "}", "&", "*", "!", "#",
         "'", '"', "|", ">", "%", "@", "`", "\uff10", "\ufeff", " ")

_SCALAR = re.compile(r"(?<=[:\[,{-] )[^\s,\[\]{}:#][^,\[\]{}#\n]*?(?=\s*[,\]}\n]|$)")


def mutate(rng: random.Random, text: str) -> str:
    """One mutant of a policy text."""
    kind = rng.randrange(6)
    if kind == 0:  # a value replaced by a nasty one
        spans = [m.span() for m in _SCALAR.finditer(text)]
        if spans:
            start, end = rng.choice(spans)
            return text[:start] + rng.choice(NASTY_VALUES) + text[end:]
    if kind == 1:  # characters inserted, deleted or replaced
        chars = list(text)
        for _ in range(rng.randrange(1, 4)):
            at = rng.randrange(len(chars) + 1)
            op = rng.randrange(3)
            if op == 0:
                chars.insert(at, rng.choice(CHARS))
            elif chars and at < len(chars):
                if op == 1:
                    del chars[at]
                else:
                    chars[at] = rng.choice(CHARS)
        return "".join(chars)
    lines = text.splitlines()
    if kind == 2 and lines:  # a line deleted, duplicated or moved
        i = rng.randrange(len(lines))
        line = lines.pop(i)
        if rng.random() < 0.6:
            lines.insert(rng.randrange(len(lines) + 1), line)
            if rng.random() < 0.5:
                lines.insert(i, line)
        return "\n".join(lines) + "\n"
    if kind == 3:  # something added at the top level
        return text + rng.choice(TOP_LEVEL_EXTRAS) + "\n"
    if kind == 4 and lines:  # indentation broken
        i = rng.randrange(len(lines))
        lines[i] = " " * rng.randrange(0, 9) + lines[i].lstrip()
        return "\n".join(lines) + "\n"
    return text[: rng.randrange(len(text) + 1)]  # cut short
