"""CPU cost of one barrage's Kafka record: the hand-written ``encode_barrage`` against the SDK's ``to_binary``.

The hand-written encoder is kept only while it is clearly faster than ``encode_barrage_sdk`` (the
cloudevents SDK's ``cloudevents.kafka.to_binary``), whose output it must equal (the unit tests check
that). Both encode the same barrages, with a ``traceparent`` extension as the traced publisher adds,
in the same process, alternating, several rounds; the figure is the median of per-round ratios.

    .venv/bin/python bench/kafka_encode.py [--count 20000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import emit_json

from functions.adapters.kafka import encode_barrage, encode_barrage_sdk
from handlers.model import Barrage

Encoder = Callable[..., Any]


def make_barrages(count: int) -> list[Barrage]:
    return [
        Barrage(id=f"01J{i:023d}", room=f"room-{i % 50}", user=f"user-{i % 97}",
                text=f"benchmark barrage number {i} with some text", sent_at=1_700_000_000_000 + i * 7,
                colour="#ffd166" if i % 2 else None)
        for i in range(count)
    ]


TRACED = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
CASES = {"plain": None, "traced": TRACED}  # what the publisher passes without and with tracing


def rate(encode: Encoder, barrages: list[Barrage], extensions: dict[str, str] | None) -> float:
    """Records encoded per second of wall time (single thread, nothing else in the loop)."""
    started = time.perf_counter()
    for barrage in barrages:
        encode(barrage, extensions=extensions)
    return len(barrages) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    barrages = make_barrages(args.count)
    assert all(encode_barrage(b) == encode_barrage_sdk(b) for b in barrages[:100]), "encoders disagree"
    result: dict[str, Any] = {"count": args.count, "cases": {}}
    for case, extensions in CASES.items():
        rate(encode_barrage, barrages[:1000], extensions)  # warm-up: caches, imports
        rate(encode_barrage_sdk, barrages[:1000], extensions)
        sdk_rates, own_rates, ratios = [], [], []
        for round_no in range(1, args.rounds + 1):
            sdk, own = rate(encode_barrage_sdk, barrages, extensions), rate(encode_barrage, barrages, extensions)
            sdk_rates.append(sdk)
            own_rates.append(own)
            ratios.append(own / sdk)
            print(f"{case} round {round_no}: SDK to_binary {sdk:,.0f} rec/s, encode_barrage {own:,.0f} rec/s, "
                  f"ratio {own / sdk:.2f}")
        ratio = statistics.median(ratios)
        print(f"{case}: median over {args.rounds} rounds: SDK {statistics.median(sdk_rates):,.0f} rec/s, "
              f"encode_barrage {statistics.median(own_rates):,.0f} rec/s, ratio {ratio:.2f} "
              f"(median of per-round ratios); count={args.count}")
        result["cases"][case] = {"sdk_per_s": statistics.median(sdk_rates),
                                 "own_per_s": statistics.median(own_rates), "ratio": ratio}
    emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
