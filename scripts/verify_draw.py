"""Check a lucky draw: fetch its proof, check the commitment, recompute the winners.

    python scripts/verify_draw.py http://127.0.0.1:8080 d_0123abcd

Prints OK, or what differs (exit status 1). The algorithm is in
livecommerce/features/draws/fair.py and docs/protocol.md ("Lucky draws").
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from livecommerce.features.draws.fair import verify


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    base, draw_id = argv[0].rstrip("/"), argv[1]
    try:
        with urllib.request.urlopen(f"{base}/api/draws/{draw_id}/proof", timeout=10) as res:
            proof = json.load(res)
    except urllib.error.HTTPError as exc:
        print(f"cannot fetch the proof: HTTP {exc.code} {exc.read().decode(errors='replace')}")
        return 1
    except OSError as exc:
        print(f"cannot fetch the proof: {exc}")
        return 1
    problems = verify(proof)
    if problems:
        for problem in problems:
            print(f"MISMATCH: {problem}")
        return 1
    print(f"OK: {len(proof['winners'])} winner(s) of {len(proof['entrants'])} entrant(s) check out")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
