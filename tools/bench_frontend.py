"""Time the front end on a generated 200-layer spec: parse, resolve and (if present) check.

    .venv/bin/python tools/bench_frontend.py [--layers 200] [--repeat 20]

The spec mixes plain chains, a residual block called through `repeat` and a train section,
so every resolver path is on the timed route. Times are the best of `--repeat` runs after
one warm-up (which also builds Lark's parse tables); the first, cold run is shown too.
"""

from __future__ import annotations

import argparse
import importlib
import time
from collections.abc import Callable
from typing import Any

from dnnspec.frontend import parse_text
from dnnspec.resolve import resolve


def generate(layers: int) -> str:
    """A spec whose model expands to about `layers` layer nodes."""
    blocks = max(1, layers // 10)  # 6 nodes each
    lines = max(0, (layers - 2 - 6 * blocks) // 2)  # 2 nodes each, plus 2 single layers
    chain = "".join(f"  dense(width + {k % 3}) -> relu\n" for k in range(lines))
    return (
        "param width = 64\n"
        "block residual(d: int, p: float = 0.1) (x) {\n"
        "  h = x -> dense(d) -> relu -> dropout(p)\n"
        "  h = h -> dense(d)\n"
        "  return relu(h + x)\n"
        "}\n\n"
        "model bench {\n  input x: float32[N, 64]\n"
        f"{chain}"
        "  dense(width)\n"
        f"  repeat {blocks} as i {{\n    residual(width, p = 0.01 * i)\n  }}\n"
        "  dense(10)\n}\n\n"
        "train {\n  data digits\n  loss cross_entropy\n  optimizer adam(lr = 1e-3)\n"
        "  schedule cosine(warmup = 1 epoch)\n  batch 64\n  epochs 1\n  metrics accuracy\n}\n"
    )


def best_of(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def shape_checker() -> Callable[[Any], Any] | None:
    """`dnnspec.check.shapes.check_spec` once that stage exists, else None."""
    try:
        return importlib.import_module("dnnspec.check.shapes").check_spec
    except ImportError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    text = generate(args.layers)

    start = time.perf_counter()
    syntax = parse_text(text, "<bench>")
    spec = resolve(syntax, "<bench>")
    cold = time.perf_counter() - start

    check = shape_checker()
    parse_s = best_of(lambda: parse_text(text, "<bench>"), args.repeat)
    resolve_s = best_of(lambda: resolve(syntax, "<bench>"), args.repeat)
    print(f"spec: {len(text.splitlines())} lines, {len(spec.model.nodes)} layer nodes")
    print(f"cold parse+resolve (incl. parser tables): {cold * 1e3:8.1f} ms")
    print(f"parse:                                    {parse_s * 1e3:8.1f} ms")
    print(f"resolve:                                  {resolve_s * 1e3:8.1f} ms")
    total = parse_s + resolve_s
    if check is not None:
        check_s = best_of(lambda: check(spec), args.repeat)
        print(f"check (shapes):                           {check_s * 1e3:8.1f} ms")
        total += check_s
    else:
        print("check (shapes):                           not available yet")
    print(f"total:                                    {total * 1e3:8.1f} ms")


if __name__ == "__main__":
    main()
