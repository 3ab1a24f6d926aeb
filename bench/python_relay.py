#!/usr/bin/env python3
"""The baseline for bench/jsonl_file_bench.sh: a straightforward relay that reads a JSONL change
log and appends each change to a file, json.loads / json.dumps per line."""

import json
import sys


def main():
    source, target = sys.argv[1], sys.argv[2]
    with open(source, encoding="utf-8") as lines, open(target, "a", encoding="utf-8") as out:
        for line in lines:
            if line.strip():
                out.write(json.dumps(json.loads(line), ensure_ascii=False, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
