#!/usr/bin/python3
"""Captures real pgoutput streams from a throw-away PostgreSQL 15 cluster as seeds for fuzz_pgoutput.

Runs a workload over the types and replica identities cdcd decodes (enums, domains, arrays,
bytea, json, unchanged TOAST values, REPLICA IDENTITY FULL, key changes, truncates, logical
messages), reads it back through a pgoutput slot (proto_version 1, as cdcd asks) and writes one
seed per transaction: the Relation and Type messages the transaction needs, then its own
messages, each framed as a 2-byte big-endian length and the message (fuzz_pgoutput's input).

Usage (as root, needs postgresql-15 and python3-psycopg2): capture_pgoutput_corpus.py OUT_DIR
"""
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time

import psycopg2
import psycopg2.extras

PGBIN = "/usr/lib/postgresql/15/bin"

WORKLOAD = [
    """CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
       CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
       CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2), flag bool,
         data bytea, doc jsonb, raw json, tags text[], nums int4[], grid int4[][], at timestamptz,
         day date, t time, span interval, u uuid, f8 float8, f4 float4, m mood, moods mood[],
         p positive, ps positive[], big int8, small int2, ch char(3), vc varchar(10));
       CREATE TABLE public.full_identity (id int PRIMARY KEY, note text);
       ALTER TABLE public.full_identity REPLICA IDENTITY FULL;
       CREATE TABLE public.no_key (a int, b text);
       ALTER TABLE public.no_key REPLICA IDENTITY FULL;
       CREATE TABLE public.toasted (id int PRIMARY KEY, body text, n int);
       ALTER TABLE public.toasted ALTER COLUMN body SET STORAGE EXTERNAL;
       CREATE TABLE "Odd ""Schema"" Table" ("weird col" text PRIMARY KEY, "ünï" int);
       CREATE PUBLICATION cdcd_fuzz FOR ALL TABLES;""",
    "SELECT 1 FROM pg_create_logical_replication_slot('cdcd_fuzz', 'pgoutput')",
    """INSERT INTO items VALUES (1, 'widget', 9.99, true, '\\x00ff10', '{"a": [1, 2, {"b": null}]}',
         '{ "spaced" : "json" }', '{"a b","c,d","e\\"f",NULL}', '{1,2,NULL}', '{{1,2},{3,4}}',
         '2024-01-02 03:04:05.123456+02', '2024-01-02', '10:11:12', '1 day 2 hours',
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', 'NaN', '-Infinity', 'happy', '{sad,ok}', 5,
         '{1,2}', 9223372036854775807, -32768, 'ab', 'short')""",
    "INSERT INTO items (id, name) VALUES (2, E'tab\\there \"quoted\" \\\\ back\\nslash')",
    "UPDATE items SET name = 'renamed', price = NULL WHERE id = 1",
    "UPDATE items SET id = 10 WHERE id = 2",
    "DELETE FROM items WHERE id = 10",
    "INSERT INTO full_identity VALUES (1, 'one'), (2, 'two')",
    "UPDATE full_identity SET note = 'uno' WHERE id = 1",
    "DELETE FROM full_identity WHERE id = 2",
    "INSERT INTO no_key VALUES (1, 'x'), (NULL, NULL)",
    "UPDATE no_key SET b = 'y' WHERE a = 1",
    "DELETE FROM no_key WHERE a = 1",
    "INSERT INTO toasted VALUES (1, repeat('long text ', 400), 1)",
    "UPDATE toasted SET n = 2 WHERE id = 1",
    """INSERT INTO "Odd ""Schema"" Table" VALUES ('k', 1);
       UPDATE "Odd ""Schema"" Table" SET "ünï" = 2""",
    "ALTER TABLE items ADD COLUMN added text DEFAULT 'new'; UPDATE items SET added = 'x' WHERE id = 1",
    "SELECT pg_logical_emit_message(true, 'cdcd', 'transactional message')",
    "SELECT pg_logical_emit_message(false, 'cdcd', 'plain message')",
    "TRUNCATE items, full_identity",
    "TRUNCATE no_key RESTART IDENTITY CASCADE",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(*args):
    subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True,
                   stdout=subprocess.DEVNULL)


def start_cluster(data, port):
    shutil.chown(data, "postgres", "postgres")
    os.chmod(data, 0o700)
    as_postgres(f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                "--locale=C.UTF-8")
    with open(os.path.join(data, "postgresql.conf"), "a") as conf:
        conf.write(f"listen_addresses = '127.0.0.1'\nport = {port}\n"
                   f"unix_socket_directories = '{data}'\nwal_level = logical\n"
                   "max_replication_slots = 4\nmax_wal_senders = 4\nfsync = off\n")
    as_postgres(f"{PGBIN}/pg_ctl", "-D", data, "-l", os.path.join(data, "server.log"), "-w",
                "-t", "30", "start")


def read_stream(dsn, end_lsn):
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(slot_name="cdcd_fuzz", decode=False,
                          options={"proto_version": "1", "publication_names": "cdcd_fuzz",
                                   "messages": "true"})
    messages = []
    deadline = time.time() + 30
    while time.time() < deadline:
        msg = cur.read_message()
        if msg is None:
            select.select([cur], [], [], 0.5)
            continue
        messages.append(bytes(msg.payload))
        cur.send_feedback(flush_lsn=msg.data_start)
        if msg.payload[:1] == b"C" and struct.unpack(">Q", msg.payload[10:18])[0] >= end_lsn:
            break
    conn.close()
    return messages


def frame(messages):
    return b"".join(struct.pack(">H", len(m)) + m for m in messages)


def write_seeds(messages, out):
    schema = {}  # relation/type oid -> its latest Relation or Type message
    transaction = []
    count = 0
    for message in messages:
        kind = message[:1]
        if kind in (b"R", b"Y"):
            schema[struct.unpack(">I", message[1:5])[0]] = message
        transaction.append(message)
        if kind == b"C" or (kind == b"M" and not transaction[0][:1] == b"B"):
            needed = [m for m in schema.values() if m not in transaction]
            with open(os.path.join(out, f"transaction-{count:02d}"), "wb") as seed:
                seed.write(frame(needed + transaction))
            count += 1
            transaction = []
    # The replication framing around a message, and a keepalive.
    xlog = b"w" + struct.pack(">QQQ", 0x16B3748, 0x16B3790, 0) + messages[0]
    keepalive = b"k" + struct.pack(">QQ", 0x16B3790, 0) + b"\x01"
    with open(os.path.join(out, "copy-data-framing"), "wb") as seed:
        seed.write(frame([xlog, keepalive]))
    return count


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    data = tempfile.mkdtemp(prefix="cdcd-fuzz-pg.")
    port = free_port()
    try:
        start_cluster(data, port)
        dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
        sql = psycopg2.connect(dsn)
        sql.autocommit = True
        with sql.cursor() as cur:
            for statement in WORKLOAD:
                cur.execute(statement)
            cur.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")
            end_lsn = int(cur.fetchone()[0])
        sql.close()
        messages = read_stream(dsn, end_lsn)  # the slot goes with the cluster
        print(f"{write_seeds(messages, out)} transactions, {len(messages)} messages")
    finally:
        subprocess.run(["runuser", "-u", "postgres", "--", f"{PGBIN}/pg_ctl", "-D", data, "-m",
                        "fast", "-w", "stop"], stdout=subprocess.DEVNULL)
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
