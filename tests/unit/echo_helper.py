"""A helper process for test_helper.py: `echo JSON` prints it back, `sleep JSON` sleeps
that many seconds, anything else fails with two lines of error output."""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    command, value = argv[0], json.loads(argv[1])
    if command == "echo":
        print(json.dumps(value))
        return 0
    if command == "sleep":
        time.sleep(value)
        return 0
    print("something went wrong", file=sys.stderr)
    print(f"no such command: {command}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
