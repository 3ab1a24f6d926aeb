#!/usr/bin/env python3
"""Writes a deterministic JSONL change log (cdcd's native format) for the quickstart, tests and
benchmarks: transactions of 1-5 changes over several entities, each key's row evolving through
insert, updates and delete, with commit times one millisecond apart."""

import argparse
import json
import random
import sys

ENTITIES = {
    "public.orders": lambda rng, key: {"id": key, "status": rng.choice(["new", "paid", "shipped", "delivered"]),
                                       "total": round(rng.uniform(5, 500), 2), "customer_id": rng.randint(1, 500)},
    "public.customers": lambda rng, key: {"id": key, "name": f"customer {key}", "email": f"c{key}@example.com",
                                          "tier": rng.choice(["free", "pro", "enterprise"])},
    "public.products": lambda rng, key: {"id": key, "sku": f"SKU-{key:06d}", "price": round(rng.uniform(1, 99), 2),
                                         "title": rng.choice(["Café crème", "Tee", "Mug", "Notebook"])},
    "inventory.stock": lambda rng, key: {"id": key, "warehouse": rng.choice(["north", "south"]),
                                         "quantity": rng.randint(0, 1000)},
}


def generate(count, seed, keys_per_entity, start_lsn, start_time_us):
    rng = random.Random(seed)
    rows = {entity: {} for entity in ENTITIES}
    lsn = start_lsn
    timestamp = start_time_us
    txid = 1000
    written = 0
    while written < count:
        size = min(rng.randint(1, 5), count - written)
        lsn += rng.randint(1, 3) * 8
        timestamp += 1000
        txid += 1
        for seq in range(size):
            entity = rng.choice(list(ENTITIES))
            key = rng.randint(1, keys_per_entity)
            old = rows[entity].get(key)
            if old is None:
                operation, new = "insert", ENTITIES[entity](rng, key)
            elif rng.random() < 0.15:
                operation, new = "delete", None
            else:
                operation, new = "update", dict(old, **{k: v for k, v in ENTITIES[entity](rng, key).items() if rng.random() < 0.5})
            if new is None:
                rows[entity].pop(key, None)
            else:
                rows[entity][key] = new
            line = {"lsn": lsn, "seq": seq, "timestamp": timestamp, "txid": txid, "entity": entity,
                    "key": {"id": key}, "operation": operation, "old": old, "new": new}
            yield json.dumps(line, ensure_ascii=False, separators=(",", ":"))
            written += 1


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keys", type=int, default=200, help="distinct keys per entity")
    parser.add_argument("--start-lsn", type=int, default=1000)
    parser.add_argument("--start-time-us", type=int, default=1763719200000000)
    parser.add_argument("--output", default="-")
    args = parser.parse_args()
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    with out:
        for line in generate(args.count, args.seed, args.keys, args.start_lsn, args.start_time_us):
            out.write(line + "\n")


if __name__ == "__main__":
    main()
