"""``python -m service``: the same as ``prunekit serve``."""

from __future__ import annotations

import argparse

from .serve import serve


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m service", description="Run the PruneKit HTTP API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    serve(args.host, args.port, log_level=args.log_level, workers=args.workers)


if __name__ == "__main__":
    main()
