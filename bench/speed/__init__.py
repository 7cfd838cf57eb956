"""Speed and memory benchmarks: each prints its numbers beside a named peer measured in the
same run (``python -m bench.speed.<name> --help``); results in docs/performance.md."""
